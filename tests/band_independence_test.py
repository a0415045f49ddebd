"""Tests for kflow_jax.evaluators.band_independence and its tool: a field of bands
0..s only gives no change on band s and one that reads the finer bands
does, the refusals, and the command a user types on a trained run."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax.evaluators import band_independence as bi
from kflow_jax import kamp
from kflow_jax.flow import paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 2)


def _haar_path(**kwargs):
  tr = kamp.get("wavelet", SHAPE, wavelet="haar", levels=2)
  return paths.make_path(tr, cutoffs=kamp.even_cutoffs(3), **kwargs)


def _coarse_field(path, pass_finer):
  """A nonlinear field of bands 0..s(t) only on bands 0..s (s from t, as a
  network conditioned on t); with pass_finer it also returns the finer
  bands of x unchanged there, which a band-s change must not see."""
  tr = path.transform
  band = np.asarray(path.band)

  def field(x, t, y):
    del y
    s = kamp.band_of_time(t, path.tau).reshape((-1,) + (1,) * band.ndim)
    c = tr.forward(x)
    coarse = jnp.where(band <= s, c, 0)
    energy = jnp.sum(jnp.square(coarse), axis=(1, 2, 3), keepdims=True)
    out = coarse * (1.0 + jnp.tanh(energy / 64.0)) + jnp.sin(coarse)
    if pass_finer:
      out = out + jnp.where(band > s, c, 0)
    return tr.inverse(out)
  return field


def _key(seed):
  # rbg: threefry's per-example draws compile several times slower on CPU.
  return jax.random.key(seed, impl="rbg")


def _data(n=12, seed=0):
  return np.random.default_rng(seed).standard_normal(
      (n,) + SHAPE).astype(np.float32)


@pytest.mark.slow
def test_field_of_coarse_bands_gives_no_change_and_a_reader_does():
  path = _haar_path()
  x1 = _data()
  rng = _key(0)
  for pass_finer in (False, True):
    recs = bi.measure(_coarse_field(path, pass_finer), path, x1, None, rng,
                      batch_size=5)
    assert [r["band"] for r in recs] == [0, 1]  # every band but the last
    for r in recs:
      assert r["error_band"] > 0.1 and r["num_examples"] == 12
      assert r["change_noise_band"] < 1e-10 * r["error_band"]
      assert r["change_zero_band"] < 1e-10 * r["error_band"]
      assert r["below_error"]
      # Finer-band output: 0 unless the field passes the finer bands on.
      finer = r["change_noise_finer"], r["change_zero_finer"]
      assert (min(finer) > 0.1) if pass_finer else (max(finer) < 1e-10)
  # A pointwise nonlinearity mixes every band into every band.
  reader = lambda x, t, y: 3.0 * jnp.tanh(x) * (1.0 + t[:, None, None, None])
  recs = bi.measure(reader, path, x1, None, rng, batch_size=5)
  for r in recs:
    assert r["change_noise_band"] > 1e-3 and r["change_zero_band"] > 1e-3
    np.testing.assert_allclose(
        r["ratio_zero"], r["change_zero_band"] / r["error_band"])



def test_numbers_do_not_depend_on_the_batch_size():
  """Per-example draws (threefry, as the tool: rbg's bits change with the
  batch shape), the last batch padded and cut."""
  path = paths.make_path(kamp.get("dct", SHAPE), num_scales=2)
  x1 = _data(n=7, seed=2)
  reader = lambda x, t, y: jnp.tanh(x)
  rng = jax.random.PRNGKey(5)
  (a,) = bi.measure(reader, path, x1, None, rng, batch_size=3)
  (b,) = bi.measure(reader, path, x1, None, rng, batch_size=7)
  assert a["num_examples"] == b["num_examples"] == 7
  for k in bi.QUANTITIES:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5)


def test_changes_of_the_identity_field_are_known():
  """v = x: nothing changes on band s, and zeroing the finer bands changes
  v there by the finer bands of the noise, (share of finer coefficients)
  per pixel on average; u_t of a linear path is known too."""
  path = _haar_path()
  x1 = _data(n=64, seed=1)
  (r0, _) = bi.measure(lambda x, t, y: x, path, x1, None,
                       _key(3), batch_size=64)
  assert r0["change_noise_band"] < 1e-10 and r0["change_zero_band"] < 1e-10
  finer_share = np.mean(np.asarray(path.band) > 0)
  np.testing.assert_allclose(r0["change_zero_finer"], finer_share,
                             rtol=4 * r0["change_zero_finer_sem"] /
                             r0["change_zero_finer"])
  # Fresh noise: the difference of two independent draws, twice that.
  np.testing.assert_allclose(r0["change_noise_finer"], 2 * finer_share,
                             rtol=0.15)


def test_runs_the_claim_is_not_made_for_are_refused():
  tr = kamp.get("fourier", SHAPE)
  with pytest.raises(ValueError, match="at least two bands; this run has "
                     "one .*num_scales >= 2"):
    bi.check_run(paths.make_path(kamp.get("identity", SHAPE)))
  with pytest.raises(ValueError, match="band independence needs config.path"
                     r".overlap=0 \(got 0.2\).*trained with"):
    bi.check_run(paths.make_path(tr, num_scales=2, overlap=0.2))
  bior = kamp.get("wavelet", SHAPE, wavelet="bior2.2", levels=1)
  with pytest.raises(ValueError, match="not orthonormal.*orthogonal wavelet"):
    bi.check_run(paths.make_path(bior, num_scales=2))
  with pytest.raises(ValueError, match="scale-adaptive.*scale_adaptive=False"):
    bi.check_run(paths.make_path(tr, num_scales=2), scale_adaptive=True)
  with pytest.raises(ValueError, match="hide_input=True.*hide_input=False"):
    bi.check_run(paths.make_path(tr, num_scales=2), hidden_input=True)
  bi.check_run(paths.make_path(tr, num_scales=2))


def _run(module, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


CONFIG = "--config=configs/digits.py:transform=wavelet,runlocal"
# The digits K-Flow default hides the finer bands from the network, which
# leaves nothing to measure (refused); the tool measures a run without.
SEEN = "--config.path.hide_input=False"


@pytest.mark.slow
def test_tool_on_a_trained_run(tmp_path):
  wd = str(tmp_path / "run")
  p = _run("kflow_jax.main", CONFIG, SEEN, f"--workdir={wd}",
           "--config.total_steps=4", "--config.sample.at_end=false")
  assert p.returncode == 0, p.stderr[-3000:]
  p = _run("kflow_jax.tools.band_independence", CONFIG, SEEN,
           f"--workdir={wd}", "--config.total_steps=4", "--step=2", "--num_examples=24",
           "--batch_size=16")
  assert p.returncode == 0, p.stderr[-3000:]
  with open(os.path.join(wd, bi.FILE)) as f:
    out = json.load(f)
  assert out["checkpoint_step"] == 2 and out["num_examples"] == 24
  assert out["split"] == "eval" and out["params"] == "ema 0.9"
  assert out["transform"] == "wavelet" and out["tau"] == [0.0, 0.5, 1.0]
  (band,) = out["bands"]  # two bands: band 0 only
  assert band["band"] == 0 and band["t_window"] == [0.0, 0.5]
  for k in bi.QUANTITIES + ("ratio_noise", "ratio_zero"):
    assert np.isfinite(band[k]) and band[k] >= 0, k
  assert band["error_band"] > 0
  assert out["below_error"] == band["below_error"]
  assert "| 0 | [0, 0.5) |" in p.stdout
  assert json.loads(p.stdout.strip().splitlines()[-1])[
      "checkpoint_step"] == 2


def test_tool_refuses_a_one_band_run_in_one_line(tmp_path):
  p = _run("kflow_jax.tools.band_independence",
           "--config=configs/digits.py:transform=identity,runlocal",
           f"--workdir={tmp_path}")
  assert p.returncode == 1 and "Traceback" not in p.stderr
  assert "kflow_jax: error: band independence needs a K-Flow run with at " \
         "least two bands" in p.stderr
