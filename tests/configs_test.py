"""Every config loads (full and runlocal) and builds its experiment; run
artifacts (PCA basis, band energies) are written once and reused."""
import glob
import importlib
import json
import os

import pytest

from kflow_jax import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common")))


def test_expected_configs_exist():
  for name in ("digits_fm", "digits_fourier", "digits_dct", "digits_wavelet",
               "digits_pca", "patches_fm", "patches_fourier",
               "patches_wavelet", "patches_pca", "imagenet_fourier"):
    assert name in NAMES


@pytest.mark.parametrize("name", [n for n in NAMES if n != "imagenet_fourier"])
def test_config_builds(name, tmp_path):
  module = importlib.import_module(f"configs.{name}")
  full, local = module.get_config(), module.get_config("runlocal")
  assert local.total_steps < full.total_steps
  assert full.transform.name == ("identity" if name.endswith("_fm")
                                 else name.split("_")[1])
  with pytest.raises(ValueError, match="runlocal"):
    module.get_config("fast")
  exp = experiment.build(local, str(tmp_path))
  assert exp.path.num_bands == local.path.num_scales
  files = os.listdir(tmp_path)
  assert ("pca_basis.npz" in files) == (local.transform.name == "pca")
  assert (experiment.ENERGY_FILE in files) == (local.path.gamma != 0)
  if local.path.gamma != 0:
    # Reused on the next start: same tau without measuring again.
    f = tmp_path / experiment.ENERGY_FILE
    saved = json.loads(f.read_text())
    saved["energies"] = [1.0] * len(saved["energies"])
    f.write_text(json.dumps(saved))
    again = experiment.build(local, str(tmp_path))
    assert again.path.tau != exp.path.tau     # read from the file
    local.path.num_scales = 2
    with pytest.raises(ValueError, match="new workdir"):
      experiment.build(local, str(tmp_path))
