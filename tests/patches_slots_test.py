"""Plan E3 on natural patches: configs/patches.py's `cond` and `slots`
arguments, and the --mode=hybrid grid of colour photos by textures
(row_classes / col_classes). The command-line run is in the slow tier."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import patches
from kflow_jax import config_lib
from kflow_jax.data import input_pipeline
from kflow_jax.flow import slots as slots_lib
from kflow_jax.modes import hybrid as hybrid_mode
from kflow_jax.modes import restore_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cond_and_slots_arguments():
  plain = patches.get_config()
  assert not plain.conditional and plain.input.patch_split == "photos"
  cond = patches.get_config("cond")
  slots = patches.get_config("slots")
  for c in (cond, slots):
    assert c.conditional and c.input.patch_split == "regions"
    assert c.input.photos == patches.E3_PHOTOS and c.input.eval_photos == ()
    assert c.path.num_scales == 3 and c.path.gamma == 0.0
    info = input_pipeline.get_info(c.input)
    assert info.num_classes == 7 and info.shape == (16, 16, 3)
  assert cond.cond.slot_starts is None
  s = slots_lib.parse(slots.cond, num_bands=3, num_classes=7,
                      label_dropout=slots.label_dropout)
  # Slot 0 owns band 0 (colour), slot 1 bands 1-2 (texture); hybrids take
  # their fine bands from the textures.
  assert s.owner().tolist() == [0, 1, 1]
  assert (s.band_mix, s.slot_dropout, s.drop_all) == (0.25, 0.1, 0.1)
  assert s.fine_classes == patches.TEXTURE_CLASSES == (4, 5, 6)
  assert [patches.E3_PHOTOS[k] for k in s.fine_classes] == [
      "brick", "grass", "gravel"]
  local = patches.get_config("slots,runlocal")
  assert local.total_steps == config_lib.runlocal(
      config_lib.base()).total_steps and local.sample.num_samples == 14


def test_hybrid_grid_labels_of_row_and_column_classes():
  y = hybrid_mode.grid_labels(9, 9, 2, 7, (0, 1, 2, 3), (4, 5, 6))
  assert y.shape == (12, 2)
  np.testing.assert_array_equal(y[:4], [[0, 4], [0, 5], [0, 6], [1, 4]])
  np.testing.assert_array_equal(y[-1], [3, 6])
  # Without classes: i % C, j % C as before.
  np.testing.assert_array_equal(hybrid_mode.grid_labels(2, 3, 3, 10)[:4],
                                [[0, 0, 0], [0, 1, 1], [0, 2, 2], [1, 0, 0]])
  rcfg = config_lib.base().restore
  rcfg.row_classes = (0, 9)
  with pytest.raises(ValueError, match=r"row_classes=\(0, 9\).*0\.\.6"):
    restore_spec.parse_restore(rcfg, "hybrid", image_shape=(16, 16, 3),
                               num_bands=3, num_classes=7)
  rcfg.row_classes = (0, 1)
  with pytest.raises(ValueError, match="other modes take none"):
    restore_spec.parse_restore(rcfg, "mix", image_shape=(16, 16, 3),
                               num_bands=3, num_classes=7)
  spec = restore_spec.parse_restore(rcfg, "hybrid", image_shape=(16, 16, 3),
                                    num_bands=3, num_classes=7)
  assert spec.row_classes == (0, 1) and spec.col_classes is None


def _main(args, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             JAX_COMPILATION_CACHE_DIR=str(cache))
  p = subprocess.run([sys.executable, "-m", "kflow_jax.main", *args],
                     cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


@pytest.mark.slow
def test_patches_slots_train_and_hybrid_grid(tmp_path):
  """configs/patches.py:slots trains a few steps through kflow_jax.main and
  draws the colour-by-texture grid."""
  wd, cache = str(tmp_path / "slots"), tmp_path / "cache"
  cfg = "--config=configs/patches.py:slots,runlocal"
  _main([cfg, f"--workdir={wd}"], cache)
  saved = json.load(open(os.path.join(wd, "config.json")))
  assert saved["cond"]["mix_fine_classes"] == [4, 5, 6]
  _main([cfg, f"--workdir={wd}", "--mode=hybrid",
         "--config.restore.row_classes=(0,1,2,3)",
         "--config.restore.col_classes=(4,5,6)"], cache)
  (js,) = glob.glob(os.path.join(wd, "hybrid_mode", "*.json"))
  out = json.load(open(js))
  assert (out["rows"], out["cols"]) == (4, 3)
  assert out["labels"][:4] == [[0, 4], [0, 5], [0, 6], [1, 4]]
  assert os.path.getsize(js[:-5] + ".png") > 500
