"""Tests of the data tools: build_dataset (image folders) and encode_latents."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from kflow_jax import input_pipeline
from kflow_jax.data import folder

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**kw):
  cfg = input_pipeline.default_config()
  cfg.update(kw)
  return cfg


def test_build_dataset_cli_and_read_through_create(tmp_path):
  src = folder.make_test_folder(str(tmp_path / "src"), num_classes=3,
                                per_class=4)
  out = str(tmp_path / "ds")
  env = dict(os.environ, PYTHONPATH=_REPO)
  proc = subprocess.run(
      [sys.executable, "-m", "kflow_jax.tools.build_dataset", f"--src={src}",
       f"--out={out}", "--image_size=16", "--eval_fraction=0.25",
       "--name=toy"], capture_output=True, text=True, env=env, timeout=120,
      check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  meta = json.load(open(os.path.join(out, "dataset_info.json")))
  assert meta["splits"]["train"]["num_examples"] == 9
  assert meta["splits"]["test"]["num_examples"] == 3
  assert meta["class_names"] == ["class_0", "class_1", "class_2"]
  cfg = _cfg(name="folder", path=out)
  assert input_pipeline.get_info(cfg) == input_pipeline.DatasetInfo(
      (16, 16, 3), 3, 9)
  batches = list(input_pipeline.create(cfg, global_batch_size=4, seed=0,
                                       finite=True))
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert images.shape == (12, 16, 16, 3) and mask.sum() == 9
  assert -1.0 <= images.min() and images.max() <= 1.0
  assert sorted(np.bincount(labels[mask], minlength=3)) == [3, 3, 3]
  # Stored image = ADM center crop of the PNG, scaled to [-1, 1].
  first = sorted(os.listdir(os.path.join(src, "class_0")))
  cropped = [folder.preprocess.center_crop_arr(
      Image.open(os.path.join(src, "class_0", f)), 16) for f in first]
  cropped = [c.astype(np.float32) / 127.5 - 1 for c in cropped]
  for img, lab in zip(images[mask], labels[mask]):
    if lab == 0:
      assert any(np.array_equal(img, c) for c in cropped)
  # Training mode: infinite, shuffled, flips from the seed.
  it = input_pipeline.create(cfg, global_batch_size=4, seed=0)
  for _ in range(5):
    b = next(it)
    assert b["image"].shape == (4, 16, 16, 3)


def test_build_dataset_stores_originals_and_crops_at_read(tmp_path):
  src = tmp_path / "flat"
  src.mkdir()
  rng = np.random.default_rng(0)
  for i in range(5):
    arr = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(src / f"{i}.png")
  (src / "notes.txt").write_text("not an image")
  out = str(tmp_path / "ds")
  meta = folder.build(str(src), out)
  assert meta["encoding"] == "file" and meta["num_classes"] == 1
  with pytest.raises(ValueError, match="image_size"):
    input_pipeline.get_info(_cfg(name="folder", path=out))
  cfg = _cfg(name="folder", path=out, image_size=8, random_flip=False)
  batch = next(input_pipeline.create(cfg, global_batch_size=5, seed=0,
                                     finite=True))
  assert batch["image"].shape == (5, 8, 8, 3)
  np.testing.assert_array_equal(batch["label"], 0)
  want = folder.preprocess.center_crop_arr(Image.open(src / "0.png"), 8)
  np.testing.assert_allclose(batch["image"][0], want / 127.5 - 1, atol=1e-6)


def test_build_dataset_errors(tmp_path):
  with pytest.raises(ValueError, match="not a directory"):
    folder.build(str(tmp_path / "missing"), str(tmp_path / "o"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no images"):
    folder.build(str(tmp_path / "empty"), str(tmp_path / "o"))
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "x.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="cannot decode image"):
    folder.build(str(bad), str(tmp_path / "o"))
  with pytest.raises(ValueError, match="build_dataset"):
    input_pipeline.get_info(_cfg(name="folder", path=str(tmp_path / "nope")))
  with pytest.raises(ValueError, match="config.input.path"):
    input_pipeline.get_info(_cfg(name="folder"))
