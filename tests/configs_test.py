"""Every shipped config, as a user types it: `python -m kflow_jax.main
--config=configs/<file>.py:<args>,runlocal` trains past two log steps and
writes samples (configs whose data cannot be shipped stop at once with the
data-set error); the baseline and the band-MoE also sample and evaluate.
Plus: config arguments, and run artifacts written once and reused."""
import glob
import importlib
import json
import os
import subprocess
import sys

import pytest

from kflow_jax import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(os.path.basename(p)[:-3]
               for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
               if not os.path.basename(p).startswith("_"))
TRANSFORMS = ("identity", "fourier", "dct", "wavelet", "pca")

# (config argument string, extra flags, expectation): "train" runs, "data"
# stops with the missing-data error. Every file in configs/ must appear.
CASES = (
    [(f"digits.py:transform={t},runlocal", (), "train") for t in TRANSFORMS]
    + [("digits.py:cond,runlocal", (), "train")]
    + [(f"patches.py:transform={t},runlocal", (), "train")
       for t in TRANSFORMS]
    # The band-routed MoE with energy-aware band times from the run's path.
    + [("digits.py:transform=wavelet,runlocal",
        ("--config.model.name=moe_dit", "--config.path.gamma=0.5"), "train")]
    + [("imagenet.py:runlocal", (), "data"),
       ("imagenet.py:moe,runlocal", (), "data")])
ALL_MODES = {0, len(TRANSFORMS) * 2 + 1}  # the baseline and the MoE
STEPS = ("--config.total_steps=4", "--config.log_every_steps=2")


def test_every_config_file_is_run_below():
  covered = {arg.split(".py")[0] for arg, _, _ in CASES}
  assert set(FILES) == covered, set(FILES) ^ covered


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def _main(args, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return subprocess.run([sys.executable, "-m", "kflow_jax.main", *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_config_runs_through_main(index, tmp_path, cache_dir):
  arg, flags, expect = CASES[index]
  wd = str(tmp_path / "run")
  common = [f"--config=configs/{arg}", f"--workdir={wd}", *flags]
  p = _main(common + list(STEPS), cache_dir)
  if expect == "data":
    assert p.returncode == 1, p.stderr[-2000:]
    assert "kflow_jax: error:" in p.stderr and "Traceback" not in p.stderr
    assert "dataset_info.json" in p.stderr  # names what to prepare
    return
  assert p.returncode == 0, p.stderr[-3000:]
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  logged = [r for r in rows if "loss" in r]
  assert [r["step"] for r in logged] == [2, 4]
  for r in logged:
    assert isinstance(r["loss"], float) and isinstance(r["band_loss"], list)
  for name in ("samples.png", "band_strip.png", "path.json"):
    assert os.path.exists(os.path.join(wd, name)), name
  if index not in ALL_MODES:
    return
  p = _main(common + list(STEPS) + ["--mode=sample"], cache_dir)
  assert p.returncode == 0, p.stderr[-3000:]
  assert glob.glob(os.path.join(wd, "sample_mode", "step_00000004_*",
                             "chunk_000000.npz"))
  p = _main(common + list(STEPS) + ["--mode=eval"], cache_dir)
  assert p.returncode == 0, p.stderr[-3000:]
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    assert "eval_loss" in json.loads(f.read().splitlines()[-1])


def test_missing_config_file_is_one_line(tmp_path, cache_dir):
  p = _main(["--config=configs/nope.py", f"--workdir={tmp_path}"],
            cache_dir)
  assert p.returncode == 1
  assert "kflow_jax: error:" in p.stderr and "Traceback" not in p.stderr
  assert "configs/nope.py" in p.stderr


@pytest.mark.parametrize("name", FILES)
def test_config_arguments(name):
  module = importlib.import_module(f"configs.{name}")
  full, local = module.get_config(), module.get_config("runlocal")
  assert local.total_steps < full.total_steps
  with pytest.raises(ValueError, match="unknown config argument 'fast'"):
    module.get_config("fast")


def test_digits_arguments_select_transform_and_labels():
  from configs import digits  # pylint: disable=g-import-not-at-top
  for t in TRANSFORMS:
    c = digits.get_config(f"transform={t}")
    assert c.transform.name == t
    assert c.path.num_scales == (1 if t == "identity" else 2)
  c = digits.get_config("cond,transform=dct")
  assert c.conditional and c.sample.guidance == 1.5
  with pytest.raises(ValueError, match="valid"):
    digits.get_config("transform=fft")


def test_run_artifacts_written_once_and_checked(tmp_path):
  from configs import patches  # pylint: disable=g-import-not-at-top
  local = patches.get_config("runlocal")
  wd = str(tmp_path)
  run = experiment.setup(local, wd, "train")
  assert run.path.num_bands == 3
  f = tmp_path / experiment.ENERGY_FILE
  saved = json.loads(f.read_text())
  saved["energies"] = [1.0] * len(saved["energies"])
  f.write_text(json.dumps(saved))
  # The energies are read back, not measured again; the new tau then
  # disagrees with path.json, the record of what the run trained on.
  with pytest.raises(ValueError, match="path.json.*new workdir"):
    experiment.setup(local, wd, "train")
  local.path.num_scales = 2
  with pytest.raises(ValueError, match="new workdir"):
    experiment.setup(local, wd, "train", allow_config_change=True)
