"""The accelerator check runs end to end at toy size on the CPU, so the
script a GPU or TPU session runs once is never stale."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_accelerator_check_quick():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # timed as users run it
  p = subprocess.run([sys.executable, "-m", "benchmarks.accelerator_check",
                      "--quick"], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=1200)
  assert p.returncode == 0, p.stderr[-3000:]
  report = json.loads(p.stdout.splitlines()[0])
  assert report["correctness"]["loss_1_vs_all_rel"] < 1e-5
  # Random (non-zero) weights: bf16 differs from fp32 by rounding, well
  # above float32 round-off and well below the loss itself.
  assert 1e-5 < report["correctness"]["loss_bf16_vs_fp32_rel"] < 0.05
  names = [r["transform"] for r in report["steps"]]
  assert names == ["identity", "fourier", "dct", "wavelet"]
  for r in report["steps"]:
    assert r["step_ms"] > 0 and r["gflops_per_step"] > 0
  assert report["sampling"]["samples_per_s"] > 0
  assert "| model | transform |" in p.stdout


def _positive(values):
  values = list(values)
  return bool(values) and all(v is not None and v > 0 for v in values)


@pytest.mark.slow
def test_run_all_quick(tmp_path):
  """Every benchmark runs at toy size through run_all, which writes one
  JSON and one markdown file named after the machine."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # timed as users run it
  p = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick",
                      f"--out={tmp_path}"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=1200)
  assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
  jsons = list(tmp_path.glob("*.json"))
  assert len(jsons) == 1, jsons
  report = json.loads(jsons[0].read_text())
  assert jsons[0].stem == report["machine"]
  assert report["jax"] and report["devices"] and report["date"]
  bench = report["benchmarks"]
  assert sorted(bench) == sorted(["transforms", "step", "loop", "input",
                                  "sampling", "scaling"])
  for name, entry in bench.items():
    assert "error" not in entry, (name, entry.get("error"))
    assert entry["seconds"] > 0
  res = {k: v["result"] for k, v in bench.items()}
  assert _positive(r["ms"] for r in res["transforms"] if "ms" in r)
  assert _positive(r["ratio"] for r in res["transforms"] if "ratio" in r)
  assert _positive([res["step"]["identity_ms"], res["step"]["fourier"]["ms"],
                    res["step"]["fourier"]["median_ratio"]])
  assert _positive([res["loop"]["bare_steps_per_s"],
                    res["loop"]["loop_steps_per_s"]])
  assert _positive(r["images_per_s"] for r in res["input"])
  s = res["sampling"]
  import benchmarks.sampling  # pylint: disable=g-import-not-at-top
  from kflow_jax.flow import sampling  # pylint: disable=g-import-not-at-top
  assert {r["solver"] for r in s["solvers"]} == set(sampling.SOLVERS.names())
  assert _positive(r["samples_per_s"] for r in s["solvers"])
  assert _positive(r["nfe"] for r in s["solvers"])
  assert _positive(r["random_fd"] for r in s["solvers"])
  assert set(s["sweep"]["kflow"]) == set(benchmarks.sampling.SCHEMES)
  for curve in list(s["sweep"]["kflow"].values()) + [
      s["sweep"]["fm"]["uniform"]]:
    assert _positive(r["nfe"] for r in curve)
    assert _positive(r["random_fd"] for r in curve)
  for metric in ("random_fd", "sliced_w2"):
    assert set(s["nfe_to_fm_quality"]["metrics"][metric]["nfe"]) == {
        "kflow/uniform", "kflow/band", "kflow/energy", "fm/uniform"}
  sc = res["scaling"]
  assert len(sc["sizes"]) >= 2 and len(sc["devices"]) >= 2
  assert _positive(r[k] for r in sc["sizes"] + sc["devices"]
                   for k in ("step_ms", "peak_mb"))
  assert [r["devices"] for r in sc["devices"]] == [1, 2]
  assert "step_ms" in sc["fits"]["devices"]
  md = (tmp_path / f"{report['machine']}.md").read_text()
  for name in bench:
    assert f"## {name}" in md
  assert "| run | solver | setting | NFE |" in md
  assert f"step ms ({report['machine']})" in md
  # The markdown is a function of the JSON alone (--markdown_from).
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  assert run_all.markdown(report) == md


def test_fit_exponent():
  from benchmarks import scaling  # pylint: disable=g-import-not-at-top
  x = np.array([32, 64, 128, 256])
  f = scaling.fit_exponent(x, 3.0 * x ** 1.7)
  assert abs(f["exponent"] - 1.7) < 1e-4 and f["r2"] > 0.9999
  assert abs(f["prefactor"] - 3.0) < 1e-6
  # Multiplicative noise: the exponent within its scale, r^2 below 1.
  noise = np.array([1.05, 0.95, 1.04, 0.97])
  f = scaling.fit_exponent(x, 0.5 * x ** 2.0 * noise)
  assert abs(f["exponent"] - 2.0) < 0.05 and 0.99 < f["r2"] < 1.0
  # Constant y (perfect data parallelism of a fixed batch): exponent 0.
  assert scaling.fit_exponent([1, 2, 4, 8], [5.0] * 4)["exponent"] == 0.0
  with pytest.raises(ValueError, match="two positive"):
    scaling.fit_exponent([1], [1.0])
  with pytest.raises(ValueError, match="two positive"):
    scaling.fit_exponent([1, 2], [1.0, 0.0])
  with pytest.raises(ValueError, match="two values"):
    scaling.fit_exponent([2, 2], [1.0, 3.0])


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "rk4"])
def test_grid_sampler_matches_integrate(solver):
  """The sweep's padded-table integration is sampling.integrate's."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import sampling as bench  # pylint: disable=g-import-not-at-top
  from kflow_jax import kamp  # pylint: disable=g-import-not-at-top
  from kflow_jax.flow import paths  # pylint: disable=g-import-not-at-top
  from kflow_jax.flow import sampling  # pylint: disable=g-import-not-at-top
  path = paths.make_path(kamp.get("fourier", shape=(4, 4, 1)), num_scales=2)
  x0 = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
  # A field that switches at the band edge, like a K-Flow model's.
  vfn = lambda x, t: jnp.where(t[:, None, None, None] < 0.5, -x, 2.0 * x * t[
      :, None, None, None])
  field = lambda x, t: vfn(x, jnp.full((x.shape[0],), t, jnp.float32))
  for name, edges in bench.grids(path, 5, [4.0, 1.0], 0.5).items():
    table, n = bench.padded_table(edges, 9)
    got = jax.jit(lambda x, tb, k: bench.integrate_on_grid(
        vfn, x, tb, k, sampling.SOLVERS.get(solver)))(x0, table, n)
    want = sampling.integrate(field, x0, edges, solver)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6,
                               err_msg=name)


def test_machine_name():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  assert run_all.sanitize(
      "Intel(R) Xeon(R) CPU @ 2.20GHz 16cpu") == "intel-xeon-cpu-16cpu"
  assert run_all.sanitize("NVIDIA H200-x1 AMD EPYC 7B13 64-Core Processor "
                          "128cpu") == "nvidia-h200-x1-amd-epyc-7b13-128cpu"
  assert run_all.sanitize("") == "unknown"
