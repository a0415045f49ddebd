"""The fast tier's one end-to-end run of the command line, as the README
gives it: `python -m kflow_jax.main --config=configs/digits.py:runlocal`
trains, then --mode=sample writes a sample set, then --mode=eval scores
that set. Every config, resume after a kill, two processes and the other
long command-line runs are in the slow tier (`pytest -m slow`)."""
import glob
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/digits.py:runlocal"


def _main(workdir, cache, *flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  p = subprocess.run([sys.executable, "-m", "kflow_jax.main", CONFIG,
                      f"--workdir={workdir}", *flags], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def test_train_sample_eval_through_main(tmp_path):
  wd, cache = str(tmp_path / "run"), str(tmp_path / "jax_cache")
  _main(wd, cache)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    logged = [r for r in map(json.loads, f) if "loss" in r]
  assert [r["step"] for r in logged] == [2, 4, 6]
  assert all(isinstance(r["loss"], float) for r in logged)
  # Per band: the mean error and its root mean square (>= the mean).
  assert all(q >= m > 0 for r in logged
             for q, m in zip(r["band_loss_rms"], r["band_loss"]))
  # The parameter count in the log (a DiT: every parameter is used).
  assert all(r["params"] == r["params_active"] > 0 for r in logged)
  for name in ("samples.png", "band_strip.png", "path.json", "config.json"):
    assert os.path.exists(os.path.join(wd, name)), name

  _main(wd, cache, "--mode=sample")
  (sample_set,) = glob.glob(os.path.join(wd, "sample_mode", "step_00000006_*"))
  assert glob.glob(os.path.join(sample_set, "chunk_*.npz"))

  _main(wd, cache, "--mode=eval", f"--config.evals.samples={sample_set}")
  with open(os.path.join(wd, "eval.json")) as f:
    out = json.load(f)
  assert out["checkpoint_step"] == 6 and out["samples"] == sample_set
  assert out["num_samples"] == 8
  for k in ("eval_loss", "spectrum_error", "sliced_w2", "random_fd"):
    assert isinstance(out["metrics"][k], float), k
