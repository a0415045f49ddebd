"""Condition slots from the command line, as a user types it: train
`configs/digits.py:slots`, sample rows of (coarse, fine) labels with
guidance per band and slot, draw the --mode=hybrid grid; the same with a
caption slot (`configs/digits.py:captions`); and the one-label
baselines (label switch, factorized sum) on `configs/digits.py:cond`.
Each check reads what the command wrote."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kflow_jax.generate import sample_set

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(args, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             JAX_COMPILATION_CACHE_DIR=str(cache))
  p = subprocess.run([sys.executable, "-m", "kflow_jax.main", *args],
                     cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def _set(workdir, pattern):
  (d,) = glob.glob(os.path.join(workdir, "sample_mode", pattern))
  return sample_set.load_samples(d), json.load(
      open(os.path.join(d, "samples.json")))


def test_slots_train_sample_hybrid(tmp_path):
  wd, cache = str(tmp_path / "slots"), tmp_path / "cache"
  cfg = "--config=configs/digits.py:slots,runlocal"
  _main([cfg, f"--workdir={wd}"], cache)
  rows = "((3,8),(3,1),(5,-1))"
  _main([cfg, f"--workdir={wd}", "--mode=sample",
         f"--config.sample.slot_labels={rows}",
         "--config.sample.guidance_matrix=((1.0,1.0),(1.0,3.0))",
         "--config.sample.guidance_mode=nested"], cache)
  data, record = _set(wd, "*_slots*_nested")
  labels = np.asarray(data["labels"])
  assert labels.shape == (20, 2)
  np.testing.assert_array_equal(labels[:3], [[3, 8], [3, 1], [5, -1]])
  assert record["spec"]["guidance_mode"] == "nested"
  assert record["spec"]["slot_labels"] == [[3, 8], [3, 1], [5, -1]]
  _main([cfg, f"--workdir={wd}", "--mode=hybrid",
         "--config.restore.rows=2", "--config.restore.cols=3"], cache)
  (js,) = glob.glob(os.path.join(wd, "hybrid_mode", "*.json"))
  out = json.load(open(js))
  assert out["labels"][:3] == [[0, 0], [0, 1], [0, 2]]
  assert os.path.getsize(js[:-5] + ".png") > 500
  # Slot options on a run without slots are refused with the fix.
  wd1 = str(tmp_path / "cond")
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/digits.py:cond,runlocal", f"--workdir={wd1}",
       "--config.sample.guidance_mode=nested"], cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
      capture_output=True, text=True, timeout=600)
  assert p.returncode == 1
  assert "condition slots" in p.stderr.strip().splitlines()[-1]


def test_caption_slots_train_sample_hybrid(tmp_path):
  """configs/digits.py:captions (a class slot on band 0, a caption slot on
  band 1): train, sample rows of (class, caption) with per-slot guidance,
  the hybrid grid (caption slot given the canonical caption of a class),
  and a word outside the vocabulary refused with the fix."""
  from kflow_jax.data import captions  # pylint: disable=g-import-not-at-top
  wd, cache = str(tmp_path / "captions"), tmp_path / "cache"
  cfg = "--config=configs/digits.py:captions,runlocal"
  _main([cfg, f"--workdir={wd}"], cache)
  assert os.path.exists(os.path.join(wd, "samples.png"))
  rows = '(("3", "a handwritten eight"), ("3", ""), ("", "the digit one"))'
  _main([cfg, f"--workdir={wd}", "--mode=sample",
         f"--config.sample.slot_captions={rows}",
         "--config.sample.guidance_matrix=((1.0,1.0),(1.0,3.0))"], cache)
  data, record = _set(wd, "*_slots*")
  labels = np.asarray(data["labels"])
  assert labels.shape == (20, 2, 8)
  source = captions.get("digits")
  assert captions.detokenize(source, labels[0, 1]) == "a handwritten eight"
  np.testing.assert_array_equal(labels[:3, 0, 0], [3, 3, 10])
  assert not labels[1, 1].any() and not labels[2, 0, 1:].any()
  assert record["spec"]["slot_captions"][0] == ["3", "a handwritten eight"]
  _main([cfg, f"--workdir={wd}", "--mode=hybrid",
         "--config.restore.rows=2", "--config.restore.cols=2"], cache)
  (js,) = glob.glob(os.path.join(wd, "hybrid_mode", "*.json"))
  assert json.load(open(js))["labels"][:2] == [[0, 0], [0, 1]]
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main", cfg, f"--workdir={wd}",
       "--mode=sample", '--config.sample.slot_captions=(("3", "a cat"),)'],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
      capture_output=True, text=True, timeout=600)
  assert p.returncode == 1
  assert "'cat' is not in the vocabulary" in p.stderr.strip().splitlines()[-1]


def test_one_label_baselines_from_the_command_line(tmp_path):
  wd, cache = str(tmp_path / "cond"), tmp_path / "cache"
  cfg = "--config=configs/digits.py:cond,runlocal"
  _main([cfg, f"--workdir={wd}"], cache)
  for flag, tag in (("--config.sample.label_switch_t=(0.5,)", "*_switch0.5"),
                    ("--config.sample.factorized_cutoffs=(0.0,0.5,1.0)",
                     "*_factorized0-0.5-1")):
    _main([cfg, f"--workdir={wd}", "--mode=sample",
           "--config.sample.slot_labels=((2,7),)", flag], cache)
    data, record = _set(wd, tag)
    np.testing.assert_array_equal(np.asarray(data["labels"])[0], [2, 7])
    assert record["labels"].startswith("slot rows")
  # The coarse-by-fine grid of the baseline (no slot rows needed).
  _main([cfg, f"--workdir={wd}", "--mode=hybrid",
         "--config.sample.label_switch_t=(0.5,)", "--config.restore.rows=2",
         "--config.restore.cols=2"], cache)
  (js,) = glob.glob(os.path.join(wd, "hybrid_mode", "*_switch0.5.json"))
  assert json.load(open(js))["label_switch_t"] == [0.5]
  # Without two labels the mode says what it needs.
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main", cfg, f"--workdir={wd}",
       "--mode=hybrid"], cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
      capture_output=True, text=True, timeout=600)
  assert p.returncode == 1 and "label_switch_t" in p.stderr
