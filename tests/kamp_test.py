"""Every K-amplitude transform: round trip, Parseval, jit/vmap/grad, bf16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from kflow_jax import kamp
from kflow_jax.kamp import dct as dct_lib
from kflow_jax.kamp import pca


def _basis(shape, patch=None, seed=0):
  rng = np.random.default_rng(seed)
  data = rng.standard_normal((64,) + shape) * np.linspace(
      0.1, 2.0, shape[1])[None, None, :, None]
  return pca.fit_basis([data[:40], data[40:]], patch=patch)


def _make(name, shape):
  if name == "wavelet":
    return kamp.get("wavelet", shape, wavelet="db2", levels=2)
  if name == "wavelet_bior":
    return kamp.get("wavelet", shape, wavelet="bior4.4", levels=1)
  if name == "pca":
    return kamp.get("pca", shape, basis=_basis(shape))
  if name == "pca_patch":
    return kamp.get("pca", shape, basis=_basis(shape, patch=4), patch=4)
  return kamp.get(name, shape)


ALL = ["identity", "fourier", "dct", "wavelet", "wavelet_bior", "pca",
       "pca_patch"]
SHAPES = [(8, 8, 1), (8, 12, 3), (16, 8, 4)]


def _x(shape, batch=3, seed=0):
  return np.random.default_rng(seed).standard_normal(
      (batch,) + shape).astype(np.float32)


def test_registry_names_and_error():
  assert set(kamp.names()) >= {"identity", "fourier", "dct", "wavelet", "pca"}
  with pytest.raises(ValueError, match=r"valid names: \['dct'"):
    kamp.get("fft", (8, 8, 3))
  with pytest.raises(ValueError, match="shape must be"):
    kamp.get("dct", (8, 8))
  for name in ("identity", "fourier", "dct"):
    with pytest.raises(ValueError, match="has no option"):
      kamp.get(name, (8, 8, 3), levels=2)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_and_static_grids(name, shape):
  t = _make(name, shape)
  x = _x(shape)
  c = jax.jit(t.forward)(x)
  assert c.shape[1:] == t.kappa.shape == t.weight.shape
  assert isinstance(t.kappa, np.ndarray) and t.kappa.dtype == np.float32
  assert t.kappa.min() == 0.0 and t.kappa.max() <= 1.0
  back = jax.jit(t.inverse)(c)
  assert back.dtype == jnp.float32 and back.shape == x.shape
  np.testing.assert_allclose(back, x, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_parseval_for_orthonormal(name):
  shape = (8, 12, 3)
  t = _make(name, shape)
  x = _x(shape)
  c = t.forward(x)
  energy = jnp.sum(t.weight * jnp.abs(c) ** 2, axis=tuple(range(1, c.ndim)))
  if t.orthonormal:
    np.testing.assert_allclose(energy, np.sum(x ** 2, axis=(1, 2, 3)),
                               rtol=1e-5)
  else:
    assert name == "wavelet_bior"


@pytest.mark.parametrize("name", ALL)
def test_jit_vmap_grad_bf16(name):
  shape = (8, 8, 3)
  t = _make(name, shape)
  x = _x(shape, batch=2)
  mask = (t.kappa <= 0.5).astype(np.float32)
  proj = lambda v: t.inverse(mask * t.forward(v))  # noqa: E731

  @jax.jit  # one compile for all checks (XLA:CPU compiles are the cost)
  def everything(x):
    # vmap over an extra leading axis equals the batched call.
    c_v = jax.vmap(t.forward)(jnp.stack([x, 2 * x]))
    # grad of the weighted energy: orthonormal => 2x.
    g = jax.grad(lambda v: jnp.sum(t.weight * jnp.abs(t.forward(v)) ** 2))(x)
    # grad through inverse(mask * forward): the self-adjoint projection.
    g2 = jax.grad(lambda v: jnp.sum(proj(v) * x))(x)
    # bf16 inputs are computed in float32 inside.
    cb = t.forward(x.astype(jnp.bfloat16))
    return c_v, t.forward(x), g, g2, proj(x), cb, t.inverse(cb)

  c_v, c, g, g2, px, cb, back_b = everything(x)
  np.testing.assert_allclose(c_v[1], 2 * c, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c_v[0], c, rtol=1e-6, atol=1e-6)
  assert np.isfinite(np.asarray(g2)).all()
  if t.orthonormal:
    np.testing.assert_allclose(g, 2 * x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g2, px, rtol=1e-4, atol=1e-5)
  assert cb.dtype in (jnp.float32, jnp.complex64)
  xb = np.asarray(x.astype(jnp.bfloat16), np.float32)
  assert not np.array_equal(xb, x)  # the bf16 path really was taken
  np.testing.assert_allclose(back_b, xb, atol=1e-5)


def test_fourier_mask_on_kappa_gives_real_numpy_lowpass():
  shape = (16, 12, 3)
  t = kamp.get("fourier", shape)
  x = _x(shape, batch=2)
  r = 0.4
  low = t.inverse(t.forward(x) * (t.kappa <= r))
  assert low.dtype == jnp.float32
  # numpy reference: full complex FFT, radial mask of the same radius.
  fy = np.fft.fftfreq(16) * 16
  fx = np.fft.fftfreq(12) * 12
  rad = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
  rmax = np.sqrt(8.0 ** 2 + 6.0 ** 2)
  spec = np.fft.fft2(x, axes=(1, 2)) * (rad / rmax <= r)[None, :, :, None]
  ref = np.fft.ifft2(spec, axes=(1, 2))
  assert np.abs(ref.imag).max() < 1e-6  # the radial mask is Hermitian
  np.testing.assert_allclose(low, ref.real, atol=1e-5)


def test_dct_matches_scipy_and_kappa(monkeypatch):
  shape = (8, 12, 3)
  t = kamp.get("dct", shape)
  x = _x(shape)
  ref = scipy.fft.dctn(x.transpose(0, 3, 1, 2), type=2, axes=(2, 3),
                       norm="ortho")
  np.testing.assert_allclose(jax.jit(t.forward)(x), ref, atol=1e-5)
  # The FFT path used for large sides gives the same coefficients (jitted:
  # op by op, its FFTs and twiddles compile one at a time).
  monkeypatch.setattr(dct_lib, "MAX_MATMUL_SIDE", 4)
  t_fft = kamp.get("dct", shape)
  fwd = jax.jit(t_fft.forward)
  np.testing.assert_allclose(fwd(x), ref, atol=1e-5)
  np.testing.assert_allclose(jax.jit(t_fft.inverse)(fwd(x)), x, atol=1e-5)
  assert t.kappa[0, 0, 0] == 0 and t.kappa[0, -1, -1] == 1
  np.testing.assert_allclose(t.kappa[1, 3, 4], 5 / np.sqrt(7 ** 2 + 11 ** 2))


def test_band_energy_sums_to_norm():
  shape = (8, 8, 3)
  x = _x(shape, batch=4)
  cut = kamp.even_cutoffs(3)
  for name in ("fourier", "dct", "wavelet"):
    t = _make(name, shape)
    e = kamp.band_energy(t, x, cut)
    assert e.shape == (3,) and (np.asarray(e) > 0).all()
    np.testing.assert_allclose(e.sum(), np.mean(np.sum(x ** 2, (1, 2, 3))),
                               rtol=1e-5)
  idx = kamp.band_index(_make("wavelet", shape).kappa, (0.0, 0.6, 1.0))
  assert idx.dtype == np.int32 and set(np.unique(idx)) == {0, 1}


def test_wrong_input_shape_errors():
  t = kamp.get("dct", (8, 8, 3))
  with pytest.raises(ValueError, match=r"kamp.get\('dct', shape=\(8, 8, 4\)"):
    t.forward(np.zeros((2, 8, 8, 4), np.float32))
  with pytest.raises(ValueError, match="inverse expects"):
    t.inverse(np.zeros((2, 8, 8, 3), np.float32))


@pytest.mark.slow  # a benchmark script (with the others in -m slow)
def test_benchmark_quick_mode_runs():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                      "benchmarks", "transforms.py")
  spec = importlib.util.spec_from_file_location("bench_transforms", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  rows = bench.main(["--quick", "--wavelet=haar", "--repeats=1"])
  names = {r[1] for r in rows}
  assert {"fourier", "dct", "wavelet haar L2", "ratio jaxwt/ours haar",
          "ratio pywt/ours haar"} <= names
  for _, name, value, err in rows:
    assert value > 0, name
    assert err is None or err < 1e-5, (name, err)


def test_band_membership_at_cutoffs_equal_to_level_kappas():
  # Six wavelet levels and six even bands: every cut-off j/6 equals a
  # level's float32 kappa, which must start band j (half-open bands), not
  # fall below it by float32 rounding (5/6 rounds down in float32).
  tr = kamp.get("wavelet", (64, 64, 1), wavelet="haar", levels=6)
  levels = np.unique(tr.kappa)
  np.testing.assert_array_equal(
      kamp.band_index(levels, kamp.even_cutoffs(6)), [0, 1, 2, 3, 4, 5, 5])
  # Band times are compared in float32 both ways, so t = tau_s is band s.
  tau = (0.0, 1 / 3, 5 / 6, 1.0)
  t = np.asarray([0.0, np.float32(1 / 3), np.float32(5 / 6), 1.0])
  np.testing.assert_array_equal(kamp.band_of_time(t, tau), [0, 1, 2, 2])
  np.testing.assert_array_equal(
      kamp.band_mean(np.array([2.0, 0.0]), np.array([4, 0])), [0.5, np.nan])
