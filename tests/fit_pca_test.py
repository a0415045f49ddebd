"""PCA basis fitting (streaming), .npz round trip, shape checks, CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest

from kflow_jax import kamp
from kflow_jax.kamp import pca
from kflow_jax.tools import fit_pca

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=200, shape=(4, 4, 2), seed=0):
  rng = np.random.default_rng(seed)
  scale = np.linspace(0.2, 3.0, int(np.prod(shape)))
  return (rng.standard_normal((n, int(np.prod(shape)))) * scale).reshape(
      (n,) + shape)


def test_streaming_fit_equals_full_eigendecomposition():
  x = _data()
  fitted = pca.fit_basis(fit_pca.array_batches(x, 32))  # 7 uneven batches
  flat = x.reshape(len(x), -1)
  ev, vec = np.linalg.eigh(flat.T @ flat / len(x))
  np.testing.assert_allclose(fitted["eigenvalues"], ev[::-1], rtol=1e-10)
  u = fitted["basis"]
  np.testing.assert_allclose(u.T @ u, np.eye(u.shape[0]), atol=1e-10)
  # Same subspaces: |<u_i, v_i>| = 1 for the (distinct) eigenvalues.
  np.testing.assert_allclose(np.abs(np.sum(u * vec[:, ::-1], 0)), 1.0,
                             atol=1e-8)
  assert fitted["count"] == 200 and fitted["shape"] == (4, 4, 2)
  assert (np.diff(fitted["eigenvalues"]) <= 0).all()


def test_no_centering_and_max_examples_and_mask():
  x = _data(n=50) + 5.0  # a big mean: the top direction must follow it
  fitted = pca.fit_basis([x[:20], x[20:]], max_examples=30)
  assert fitted["count"] == 30
  top = fitted["basis"][:, 0]
  mean = x[:30].reshape(30, -1).mean(0)
  assert abs(top @ mean / np.linalg.norm(mean)) > 0.9
  masked = pca.fit_basis([{"image": x[:20], "mask": np.arange(20) < 10}])
  ref = pca.fit_basis([x[:10]])
  np.testing.assert_allclose(masked["eigenvalues"], ref["eigenvalues"])


def test_patch_fit_shares_one_basis():
  x = _data(n=20, shape=(8, 8, 3))
  fitted = pca.fit_basis([x], patch=4)
  assert fitted["basis"].shape == (48, 48) and fitted["patch"] == 4
  patches = x.reshape(20, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5)
  flat = patches.reshape(-1, 48)
  ev = np.linalg.eigvalsh(flat.T @ flat / len(flat))[::-1]
  np.testing.assert_allclose(fitted["eigenvalues"], ev, rtol=1e-8)


def test_npz_round_trip_and_shape_checks(tmp_path):
  x = _data(n=100, shape=(4, 4, 2))
  path = str(tmp_path / "basis.npz")
  fit_pca.fit_and_save(x.astype(np.float32), path)
  t = kamp.get("pca", (4, 4, 2), basis=path)
  c = t.forward(x[:5].astype(np.float32))
  assert c.shape == (5, 32)
  np.testing.assert_allclose(t.inverse(c), x[:5], atol=1e-5)
  # kappa = rank / (D - 1): largest eigenvalue first.
  np.testing.assert_allclose(t.kappa, np.arange(32) / 31)
  energy = np.mean(np.asarray(c) ** 2, axis=0)
  assert energy[0] > energy[-1]
  assert pca.load_basis(path) is pca.load_basis(path)  # loaded once
  with pytest.raises(ValueError, match=r"works for shape \(4, 4, 2\)"):
    kamp.get("pca", (4, 4, 3), basis=path)
  with pytest.raises(ValueError, match="fitted with patch=None"):
    kamp.get("pca", (4, 4, 2), basis=path, patch=2)
  with pytest.raises(ValueError, match="does not exist"):
    kamp.get("pca", (4, 4, 2), basis=str(tmp_path / "nope.npz"))
  with pytest.raises(ValueError, match="needs basis="):
    kamp.get("pca", (4, 4, 2))
  with pytest.raises(ValueError, match="valid options"):
    kamp.get("pca", (4, 4, 2), basis=path, bases=1)
  with pytest.raises(ValueError, match="not orthonormal"):
    kamp.get("pca", (4, 4, 2), basis=np.ones((32, 32)))


def test_patch_basis_applies_to_other_image_sizes(tmp_path):
  path = str(tmp_path / "patch.npz")
  fit_pca.fit_and_save(_data(n=10, shape=(8, 8, 3)), path, patch=4)
  t = kamp.get("pca", (16, 8, 3), basis=path)
  assert t.kappa.shape == (4, 2, 48)
  x = _data(n=2, shape=(16, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(t.inverse(t.forward(x)), x, atol=1e-5)
  with pytest.raises(ValueError, match="patch=4 must divide H and W"):
    kamp.get("pca", (10, 8, 3), basis=path)
  with pytest.raises(ValueError, match="fitted on"):
    kamp.get("pca", (8, 8, 1), basis=path)


def test_fit_errors():
  with pytest.raises(ValueError, match="no data"):
    pca.fit_basis([])
  with pytest.raises(ValueError, match="Use patch PCA"):
    pca.fit_basis([np.zeros((1, 128, 128, 3))])
  with pytest.raises(ValueError, match="changed shape"):
    pca.fit_basis([np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 8, 1))])


# Slow tier: a command-line run of the tool; the fit itself, its file and
# its errors are the fast tests above.
@pytest.mark.slow
def test_cli_on_digits_config(tmp_path):
  out = str(tmp_path / "digits.npz")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "-m", "kflow_jax.tools.fit_pca",
       f"--config={ROOT}/configs/digits.py:transform=pca", f"--out={out}",
       "--max_examples=300", "--batch_size=128"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  data = np.load(out)
  shape = tuple(int(s) for s in data["shape"])
  assert int(data["count"]) == 300 and int(data["patch"]) == 0
  t = kamp.get("pca", shape, basis=out)
  assert t.kappa.shape == (int(np.prod(shape)),)
