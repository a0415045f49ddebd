"""Tests of the data tools: build_dataset (image folders) and encode_latents."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from kflow_jax import config_lib
from kflow_jax.data import input_pipeline
from kflow_jax.data import folder

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**kw):
  cfg = config_lib.base().input
  cfg.update(kw)
  return cfg


def _build_dataset(src, out, *flags):
  """Runs the build_dataset CLI as a user would."""
  proc = subprocess.run(
      [sys.executable, "-m", "kflow_jax.tools.build_dataset", f"--src={src}",
       f"--out={out}", "--name=toy", *flags], capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=_REPO), timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_build_dataset_cli_and_read_through_create(tmp_path):
  src = folder.make_test_folder(str(tmp_path / "src"), num_classes=3,
                                per_class=4)
  out = str(tmp_path / "ds")
  _build_dataset(src, out, "--image_size=16", "--eval_fraction=0.25")
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


# ------------------------------------------------------------ latents


def _tiny_vae_file(tmp_path):
  """A tiny random VAE (widths 32, 64: f = 2) saved as diffusers safetensors."""
  import jax  # pylint: disable=g-import-not-at-top
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  from kflow_jax.models import autoencoder  # pylint: disable=g-import-not-at-top
  model = autoencoder.AutoencoderKL(block_out_channels=(32, 64),
                                    layers_per_block=1)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32),
      autoencoder.param_shapes(model, 16))
  path = str(tmp_path / "diffusion_pytorch_model.safetensors")
  st_numpy.save_file(autoencoder.to_diffusers_state_dict(params), path)
  return model, params, path


_PIXEL_CONFIG = '''
import ml_collections
from kflow_jax import config_lib

def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.input = config_lib.base().input
  config.input.name = "natural_patches"
  config.input.image_size = 16
  config.input.patches_per_epoch = 20
  config.input.eval_patches = 6
  return config
'''


@pytest.mark.slow
def test_encode_latents_cli_then_train_and_decode(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  model, params, weights = _tiny_vae_file(tmp_path)
  config_file = tmp_path / "pixels.py"
  config_file.write_text(_PIXEL_CONFIG)
  out = str(tmp_path / "latents")
  env = dict(os.environ, PYTHONPATH=_REPO)
  proc = subprocess.run(
      [sys.executable, "-m", "kflow_jax.tools.encode_latents",
       f"--config={config_file}", f"--out={out}", f"--vae_weights={weights}",
       "--splits=train,eval", "--batch_size=8", "--flip",
       "--vae_block_out_channels=32,64", "--vae_layers_per_block=1"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  meta = json.load(open(os.path.join(out, "dataset_info.json")))
  assert meta["splits"]["train"]["num_examples"] == 20
  assert meta["splits"]["test"]["num_examples"] == 6
  assert meta["latent_shape"] == [8, 8, 4] and meta["flipped"]

  cfg = _cfg(name="latents", path=out, latent_sample=False,
             random_flip=False)
  info = input_pipeline.get_info(cfg)
  assert info == input_pipeline.DatasetInfo((8, 8, 4), 15, 20)
  got = next(input_pipeline.create(cfg, global_batch_size=20, seed=0,
                                   finite=True))
  pixels_cfg = _cfg(name="natural_patches", image_size=16,
                    patches_per_epoch=20, eval_patches=6)
  pixels = next(input_pipeline.create(pixels_cfg, global_batch_size=20,
                                      seed=0, finite=True))
  np.testing.assert_array_equal(got["label"], pixels["label"])
  mean, _ = jax.jit(lambda p, x: model.apply(
      {"params": p}, x, method=model.encode))(params, pixels["image"])
  np.testing.assert_allclose(got["image"], np.asarray(mean) * 0.18215,
                             rtol=1e-4, atol=1e-5)

  # Training mode samples z = (mean + std * eps) * scale, reproducibly.
  train_cfg = _cfg(name="latents", path=out)
  it = input_pipeline.create(train_cfg, global_batch_size=4, seed=1)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = next(it)
  it2 = input_pipeline.create(train_cfg, global_batch_size=4, seed=1)
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["image"], want["image"])
  assert want["image"].shape == (4, 8, 8, 4)

  decode = input_pipeline.latent_decoder(train_cfg)
  images = decode(want["image"])
  assert images.shape == (4, 16, 16, 3)
  assert input_pipeline.latent_decoder(pixels_cfg) is None


@pytest.mark.slow
def test_image_folder_trains_for_a_few_steps(tmp_path):
  """A user's folder of PNGs -> build_dataset -> a K-Flow run on it."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import digits  # pylint: disable=g-import-not-at-top
  from kflow_jax.modes import train  # pylint: disable=g-import-not-at-top
  src = folder.make_test_folder(str(tmp_path / "src"), num_classes=2,
                                per_class=8)
  out = str(tmp_path / "ds")
  _build_dataset(src, out, "--image_size=8")
  c = digits.get_config("runlocal")
  c.input.name = "folder"
  c.input.path = out
  c.input.eval_split = "train"
  c.total_steps = 3
  c.batch_size = 8
  c.sample.at_end = False
  wd = str(tmp_path / "run")
  state = train.train_and_evaluate(c, wd, devices=jax.devices()[:2])
  assert int(state.step) == 3
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f]
  assert metrics[-1]["step"] == 3
  assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
  leaves = jax.tree.leaves(state.params)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
