"""The accelerator check runs end to end at toy size on the CPU, so the
script a GPU or TPU session runs once is never stale."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_check_quick():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run([sys.executable, "-m", "benchmarks.accelerator_check",
                      "--quick"], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=1200)
  assert p.returncode == 0, p.stderr[-3000:]
  report = json.loads(p.stdout.splitlines()[0])
  assert report["correctness"]["loss_1_vs_all_rel"] < 1e-5
  # Trained params: bf16 differs from fp32, but only by rounding.
  assert 0 < report["correctness"]["loss_bf16_vs_fp32_rel"] < 0.05
  names = [r["transform"] for r in report["steps"]]
  assert names == ["identity", "fourier", "dct", "wavelet"]
  for r in report["steps"]:
    assert r["step_ms"] > 0 and r["gflops_per_step"] > 0
  assert report["sampling"]["samples_per_s"] > 0
  assert "| model | transform |" in p.stdout
