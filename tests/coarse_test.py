"""Tests for kflow_jax.kamp.coarse: bands 0..s on a smaller grid.

Round trip against the band projection of the path, white noise, the
refusals, and the exactness claim on Gaussian models: the optimal velocity
of band s computed from the coarse image equals the one from the full image,
with independent coefficients and with data that couple the bands (there
band s reads the finished coarser bands, and a coarse grid that read the
finer bands or lost the coarser ones would fail).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax import kamp
from kflow_jax.flow import paths
from kflow_jax.kamp import coarse

SHAPE = (16, 16, 2)
B = 4
# Radius of the corner coefficient, the kappa = 1 of each spectral grid.
DCT_RMAX = np.sqrt(15.0 ** 2 + 15.0 ** 2)
FFT_RMAX = np.sqrt(8.0 ** 2 + 8.0 ** 2)

# name -> (build(shape), cut-offs with three bands on 4x4, 8x8, 16x16).
# Spectral cut-offs sit on the edge of the 4x4 and 8x8 grids: the radius of
# the first coefficient each grid lacks (dct: index 4, 8; fourier: |f| = 2,
# 4). Wavelet cut-offs: any value between level kappas (0, 1/2, 1) fits.
CASES = {
    "haar": (lambda shape: kamp.get("wavelet", shape, wavelet="haar",
                                    levels=2), kamp.even_cutoffs(3)),
    "db4": (lambda shape: kamp.get("wavelet", shape, wavelet="db4",
                                   levels=2), kamp.even_cutoffs(3)),
    "dct": (lambda shape: kamp.get("dct", shape),
            (0.0, 4 / DCT_RMAX, 8 / DCT_RMAX, 1.0)),
    "fourier": (lambda shape: kamp.get("fourier", shape),
                (0.0, 2 / FFT_RMAX, 4 / FFT_RMAX, 1.0)),
}
GRIDS = [(4, 4), (8, 8), (16, 16)]


def _case(name, shape=SHAPE):
  build, cutoffs = CASES[name]
  tr = build(shape)
  return tr, paths.make_path(tr, cutoffs=cutoffs)


def _project(path, x, bands):
  """The part of x in `bands` through the full transform (the reference)."""
  tr = path.transform
  keep = np.isin(path.band, np.asarray(bands))
  return tr.inverse(jnp.where(keep, tr.forward(x), 0))


def _x(shape=SHAPE, batch=B, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(
      (batch,) + tuple(shape)).astype(np.float32))


@pytest.mark.parametrize("name", sorted(CASES))
def test_coarse_shape_per_band(name):
  tr, path = _case(name)
  for s, (h, w) in enumerate(GRIDS):
    assert coarse.coarse_shape(tr, path.cutoffs, s) == (h, w, SHAPE[2])
    assert coarse.coarse_grid(tr, path.cutoffs, s).factor == 16 // h


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_is_band_projection(name):
  tr, path = _case(name)
  x = _x()
  for s in range(path.num_bands):
    grid = coarse.coarse_grid(tr, path.cutoffs, s)
    z = grid.to_coarse(x)
    assert z.shape == (B,) + grid.shape and z.dtype == jnp.float32
    low = _project(path, x, range(s + 1))
    np.testing.assert_allclose(grid.from_coarse(z), low, atol=2e-5)
    # Isometry on bands 0..s: same norm per example, no rescaling.
    np.testing.assert_allclose(
        jnp.sum(z ** 2, axis=(1, 2, 3)), jnp.sum(low ** 2, axis=(1, 2, 3)),
        rtol=1e-5)
    # to_coarse(from_coarse(.)) keeps a coarse image of bands 0..s as it is.
    np.testing.assert_allclose(grid.to_coarse(grid.from_coarse(z)), z,
                               atol=2e-5)
    # Band s only, on the coarse grid, is band s of the full image.
    only = coarse.band_only(tr, path.cutoffs, z, s)
    np.testing.assert_allclose(grid.from_coarse(only),
                               _project(path, x, [s]), atol=2e-5)
    # The functional forms and jit agree with the grid's own functions.
    np.testing.assert_allclose(
        coarse.to_coarse(tr, path.cutoffs, x, s), z, atol=1e-6)
    np.testing.assert_allclose(
        coarse.from_coarse(tr, path.cutoffs, z, s), grid.from_coarse(z),
        atol=1e-6)
  np.testing.assert_allclose(jax.jit(grid.to_coarse)(x), z, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_last_band_is_the_full_image(name):
  tr, path = _case(name)
  x = _x()
  grid = coarse.coarse_grid(tr, path.cutoffs, path.num_bands - 1)
  assert grid.shape == SHAPE and grid.factor == 1
  np.testing.assert_array_equal(grid.to_coarse(x), x)
  np.testing.assert_array_equal(grid.from_coarse(x), x)


def _cov(z):
  flat = np.asarray(z, np.float64).reshape(z.shape[0], -1)
  return flat.T @ flat / flat.shape[0]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "haar" else pytest.mark.slow)
    for n in sorted(CASES)])  # haar fast, the rest in -m slow
def test_white_noise_stays_white(name):
  """to_coarse of N(0, I) is N(0, Pi), Pi the projector on bands 0..s of
  the coarse grid: the identity for wavelets (bands 0..s are the whole
  approximation); for fourier/dct the grid's corners beyond the inscribed
  disk hold finer bands and are 0, and filling them with independent noise
  gives N(0, I) exactly. Coefficients keep unit variance (no 2^m factor)."""
  shape = (16, 16, 1)
  tr, path = _case(name, shape)
  n = 8192
  eps = _x(shape, n, seed=1)
  for s in range(path.num_bands - 1):
    grid = coarse.coarse_grid(tr, path.cutoffs, s)
    dim = int(np.prod(grid.shape))
    eye = jnp.eye(dim, dtype=jnp.float32).reshape((dim,) + grid.shape)
    proj = np.asarray(grid.to_coarse(grid.from_coarse(eye)),
                      np.float64).reshape(dim, dim)
    np.testing.assert_allclose(proj, proj.T, atol=1e-5)
    np.testing.assert_allclose(proj @ proj, proj, atol=1e-5)
    if name in ("haar", "db4"):
      np.testing.assert_allclose(proj, np.eye(dim), atol=1e-5)
    z = grid.to_coarse(eps)
    assert np.abs(_cov(z) - proj).max() < 0.08
    fresh = _x(grid.shape, n, seed=2)
    filled = z + fresh - grid.to_coarse(grid.from_coarse(fresh))
    assert np.abs(_cov(filled) - np.eye(dim)).max() < 0.08
    coef = np.asarray(grid.transform.forward(z))
    power = np.mean(np.abs(coef) ** 2, axis=0)[grid.members]
    np.testing.assert_allclose(power.mean(), 1.0, atol=0.03)
    assert np.abs(power - 1.0).max() < 0.12


def test_misfit_cutoffs_are_refused_with_the_nearest_that_fit():
  dct = kamp.get("dct", SHAPE)
  with pytest.raises(ValueError, match=r"0\.5.*no smaller dyadic grid.*"
                     r"0\.377124 \(bands 0\.\.0 on 8x8\)"):
    coarse.coarse_grid(dct, (0.0, 0.5, 1.0), 0)
  fft = kamp.get("fourier", SHAPE)
  with pytest.raises(ValueError, match=r"inside the 8x8 grid.*"
                     r"0\.176777 \(bands 0\.\.0 on 4x4\) or "
                     r"0\.353553 \(bands 0\.\.0 on 8x8\)"):
    coarse.to_coarse(fft, (0.0, 0.3, 1.0), _x(), 0)
  # Only the top edge of bands 0..s matters: band 1 of these cut-offs fits.
  assert coarse.coarse_shape(fft, (0.0, 0.3, 4 / FFT_RMAX, 1.0), 1) == (
      8, 8, 2)
  # The suggested (printed, rounded) values fit.
  assert coarse.coarse_shape(dct, (0.0, 0.377124, 1.0), 0) == (8, 8, 2)
  assert coarse.coarse_shape(fft, (0.0, 0.176777, 1.0), 0) == (4, 4, 2)
  assert coarse.coarse_shape(fft, (0.0, 0.353553, 1.0), 0) == (8, 8, 2)
  # Every interval of fitting_cutoffs fits at both ends of what it says.
  for tr in (dct, fft):
    for fit in coarse.fitting_cutoffs(tr):
      for r in (fit.hi, 0.5 * (fit.lo + fit.hi)):
        assert coarse.coarse_shape(tr, (0.0, r, 1.0), 0)[:2] == fit.shape
  assert [f.shape for f in coarse.fitting_cutoffs(fft)] == [
      (1, 1), (4, 4), (8, 8)]  # 2x2 holds only the mean too: not listed


@pytest.mark.parametrize("cutoffs,expect", [((0.0, 0.5, 1.0), (16, 16)),
                                            ((0.0, 0.3, 1.0), (8, 8))])
def test_not_strict_uses_the_smallest_grid_and_stays_exact(cutoffs, expect):
  tr = kamp.get("dct", SHAPE)
  path = paths.make_path(tr, cutoffs=cutoffs)
  grid = coarse.coarse_grid(tr, cutoffs, 0, strict=False)
  assert grid.shape[:2] == expect
  x = _x()
  z = grid.to_coarse(x)
  np.testing.assert_allclose(grid.from_coarse(z), _project(path, x, [0]),
                             atol=2e-5)
  assert 0 < grid.members.sum() < grid.members.size


def test_wavelet_any_cutoff_fits_whole_levels():
  tr = kamp.get("wavelet", SHAPE, wavelet="haar", levels=2)
  for r, hw in ((0.1, 4), (0.5, 4), (0.51, 8), (0.99, 8)):
    assert coarse.coarse_shape(tr, (0.0, r, 1.0), 0) == (hw, hw, 2)


def test_transforms_without_a_coarse_grid_are_refused():
  with pytest.raises(ValueError, match="'identity' has no lower-resolution "
                     "grid.*kappa 0"):
    coarse.coarse_grid(kamp.get("identity", SHAPE), (0.0, 1.0), 0)
  rng = np.random.default_rng(0)
  data = rng.standard_normal((64,) + SHAPE).astype(np.float32)
  pca = kamp.get("pca", SHAPE, basis=kamp.pca.fit_basis([data]))
  with pytest.raises(ValueError, match="'pca' has no lower-resolution grid"
                     ".*principal components"):
    coarse.coarse_shape(pca, (0.0, 0.5, 1.0), 0)
  bior = kamp.get("wavelet", SHAPE, wavelet="bior2.2", levels=2)
  with pytest.raises(ValueError, match="not orthonormal"):
    coarse.coarse_grid(bior, kamp.even_cutoffs(3), 0)
  dct = kamp.get("dct", SHAPE)
  with pytest.raises(ValueError, match=r"band s must be an int in \[0, 1\]"):
    coarse.coarse_grid(dct, (0.0, 8 / DCT_RMAX, 1.0), 2)
  grid = coarse.coarse_grid(dct, (0.0, 8 / DCT_RMAX, 1.0), 0)
  with pytest.raises(ValueError, match=r"holds images \[B, 8, 8, 2\]"):
    grid.from_coarse(_x())


# ----------------------------------------------------------------------------
# Exactness on a Gaussian model.


def optimal_gain(lam, a, da):
  """E[u | c_t] = gain * c_t, per coefficient, for the K-Flow path.

  Per coefficient, with independent c1 ~ N(0, lam) (data) and c0 ~ N(0, 1)
  (noise): c_t = a c1 + (1 - a) c0 and u = da (c1 - c0). Both are jointly
  Gaussian with mean 0, so E[u | c_t] = Cov(u, c_t) / Var(c_t) * c_t with
  Cov(u, c_t) = da (a lam - (1 - a)) and Var(c_t) = a^2 lam + (1 - a)^2.
  Coefficients are independent, so conditioning on all of x_t is
  conditioning on each coefficient alone. (Complex Fourier bins: the same
  ratio holds for the real and the imaginary part.)
  """
  return da * (a * lam - (1.0 - a)) / (a * a * lam + (1.0 - a) ** 2)


def _spectrum(kappa):
  """Data variance per coefficient: decaying with scale, as images do."""
  return 4.0 * np.exp(-6.0 * np.asarray(kappa, np.float64)) + 0.05


def test_optimal_gain_matches_regression():
  rng = np.random.default_rng(0)
  n, lam, a, da = 400_000, 2.5, 0.6, 3.0
  c1 = rng.standard_normal(n) * np.sqrt(lam)
  c0 = rng.standard_normal(n)
  ct, u = a * c1 + (1 - a) * c0, da * (c1 - c0)
  slope = np.sum(u * ct) / np.sum(ct * ct)
  np.testing.assert_allclose(slope, optimal_gain(lam, a, da), rtol=1e-2)


def _velocity(tr, path, x_t, t, lam):
  """The optimal velocity T^-1(gain * T(x_t)) with the path's schedule."""
  a, da = paths.alpha(path, t)
  gain = optimal_gain(lam, a, da).astype(np.float32)
  return tr.inverse(gain * tr.forward(x_t))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "haar" else pytest.mark.slow)
    for n in sorted(CASES)])  # haar fast, the rest in -m slow
def test_optimal_velocity_from_coarse_input_is_exact(name):
  tr, path = _case(name)
  lam = _spectrum(tr.kappa)
  g = _x(seed=4)
  x1 = tr.inverse(jnp.sqrt(lam).astype(np.float32) * tr.forward(g))
  x0 = _x(seed=5)
  width = np.diff(path.tau)
  for s in range(path.num_bands):
    t = jnp.asarray(path.tau[s] + width[s] * np.array([0.05, 0.3, 0.6, 0.95]),
                    jnp.float32)
    x_t = paths.interpolate(path, x0, x1, t)
    full = _velocity(tr, path, x_t, t, lam)
    # Only band s moves.
    np.testing.assert_allclose(_project(path, full, [s]), full, atol=1e-5)
    assert float(jnp.abs(full).max()) > 0.1

    grid = coarse.coarse_grid(tr, path.cutoffs, s)
    small = grid.transform
    # The coarse path: each coarse coefficient keeps its band's window
    # (coefficients standing for none get the last band; they are 0).
    bands = np.where(grid.bands < 0, path.num_bands - 1, grid.bands)
    win = path.windows()
    start, end = win[bands, 0], win[bands, 1]
    coarse_path = path._replace(
        start=start, end=end,
        length=(end.astype(np.float64) - start).astype(np.float32),
        band=bands)
    z_t = grid.to_coarse(x_t)  # bands 0..s only, on h x w
    reduced = grid.from_coarse(
        _velocity(small, coarse_path, z_t, t, _spectrum(small.kappa)))
    np.testing.assert_allclose(reduced, full, atol=2e-5)


# ----------------------------------------------------------------------------
# Exactness with cross-band coupling.
#
# The diagonal model above holds for any transform: its optimum of band s
# reads band s alone, so it cannot show that the coarse grid keeps what
# band s needs and nothing else. Here the data couple every band (a dense
# low-rank term), so the optimum of band s reads the finished coarser
# bands too; it still cannot read the finer ones, which are pure noise
# while band s flows. The exact Gaussian optimum, as image-space
# operators: E[u | x_t] = C_ux C_xx^-1 x_t, and from the coarse image z_t
# = G x_t it is H E[G u | z_t] with G = to_coarse, H = from_coarse.


def _linear(fn, shape):
  """The matrix [out, in] of a linear map of images of `shape`."""
  n = int(np.prod(shape))
  basis = jnp.asarray(np.eye(n, dtype=np.float32).reshape((n,) + shape))
  return np.asarray(fn(basis), np.float64).reshape(n, -1).T


def _coupled_cov(tr, seed=7, rank=8):
  """Image-space covariance: the decaying spectrum plus a dense low-rank
  term (random images, energy in every band) coupling all bands."""
  root = np.sqrt(_spectrum(tr.kappa)).astype(np.float32)
  s = _linear(lambda x: tr.inverse(root * tr.forward(x)), SHAPE)
  w = 0.7 * np.random.default_rng(seed).standard_normal(
      (int(np.prod(SHAPE)), rank))
  return s @ s.T + w @ w.T


def _moments(path, t, cov):
  """(Cov(u, x_t), Cov(x_t)) of x_t = M_a x1 + M_(1-a) x0, u = M_a' (x1 -
  x0), M_c the operator T^-1 c T; x1 ~ N(0, cov), x0 ~ N(0, I)."""
  tr = path.transform
  a, da = paths.alpha(path, jnp.asarray([t], jnp.float32))
  ma, mb, md = (_linear(lambda x, c=c: tr.inverse(c * tr.forward(x)), SHAPE)
                for c in (a, 1.0 - a, da))
  return md @ cov @ ma.T - md @ mb.T, ma @ cov @ ma.T + mb @ mb.T


def _from_coarse_input(grid, g, c_ux, c_xx):
  """The optimum from the coarse image g x_t, lifted by from_coarse."""
  h = _linear(grid.from_coarse, grid.shape)
  k = (g @ c_ux @ g.T) @ np.linalg.pinv(g @ c_xx @ g.T, rcond=1e-10,
                                       hermitian=True)
  return h @ k @ g


def _rel(a, b):
  """||a|| / ||b|| (Frobenius)."""
  return float(np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "haar" else pytest.mark.slow)
    for n in sorted(CASES)])  # haar fast, the rest in -m slow
def test_coupled_model_band_s_reads_coarse_bands_and_no_finer(name):
  tr, path = _case(name)
  cov = _coupled_cov(tr)
  n = int(np.prod(SHAPE))
  proj = {b: _linear(lambda x, b=b: _project(path, x, [b]), SHAPE)
          for b in range(path.num_bands)}
  for s in range(path.num_bands):
    grid = coarse.coarse_grid(tr, path.cutoffs, s)
    g = _linear(grid.to_coarse, SHAPE)
    finer = sum((proj[b] for b in range(s + 1, path.num_bands)),
                np.zeros((n, n)))
    coarser = sum((proj[b] for b in range(s)), np.zeros((n, n)))
    c_ux, c_xx = _moments(path, 0.5 * (path.tau[s] + path.tau[s + 1]), cov)
    full = c_ux @ np.linalg.inv(c_xx)
    # Only band s moves; it reads the finished coarser bands (the coupling
    # at work: 6-25 % of the operator) and none of the finer bands' noise.
    assert _rel(full - proj[s] @ full, full) < 2e-6
    assert _rel(full @ finer, full) < 2e-6
    if s:
      assert _rel(full @ coarser, full) > 0.02
    # From the coarse image: the same operator.
    assert _rel(_from_coarse_input(grid, g, c_ux, c_xx) - full, full) < 2e-6
    if s == path.num_bands - 1:
      continue
    # The check fails for a coarse grid that read the finer bands (their
    # pixels, strided to the coarse grid, added: ~45 % off) ...
    f = grid.factor
    stride = _linear(lambda x: x[:, ::f, ::f, :], SHAPE)
    leaky = _from_coarse_input(grid, g + 0.5 * stride @ finer, c_ux, c_xx)
    assert _rel(leaky - full, full) > 0.1
    # ... and, for s > 0, for one that lost the coarser bands (10-40 %).
    if s:
      lost = _from_coarse_input(grid, g @ (np.eye(n) - coarser), c_ux, c_xx)
      assert _rel(lost - full, full) > 0.03


# Each transform fast on one shape (non-square, or odd channels), the other
# shape in -m slow.
@pytest.mark.parametrize("name,shape", [
    ("dct", (8, 16, 1)), ("fourier", (12, 8, 3)), ("wavelet", (8, 16, 1)),
    pytest.param("dct", (12, 8, 3), marks=pytest.mark.slow),
    pytest.param("fourier", (8, 16, 1), marks=pytest.mark.slow),
    pytest.param("wavelet", (12, 8, 3), marks=pytest.mark.slow)])
def test_round_trip_on_other_shapes(name, shape):
  """Non-square grids and odd coarse sides (12 -> 3): every fitting
  cut-off that fitting_cutoffs lists gives the exact projection."""
  opts = {"wavelet": "sym3", "levels": 2} if name == "wavelet" else {}
  tr = kamp.get(name, shape, **opts)
  fits = coarse.fitting_cutoffs(tr)
  cutoffs = (0.0,) + tuple(f.hi if f.hi < 1 else 0.5 * (f.lo + 1.0)
                           for f in fits) + (1.0,)
  path = paths.make_path(tr, cutoffs=cutoffs)
  x = _x(shape, 2)
  for s, fit in enumerate(fits + [None]):
    grid = coarse.coarse_grid(tr, cutoffs, s)
    assert grid.shape[:2] == (fit.shape if fit else shape[:2])
    np.testing.assert_allclose(grid.from_coarse(grid.to_coarse(x)),
                               _project(path, x, range(s + 1)), atol=2e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_coefficient_maps_agree_with_image_maps(name):
  """coef_to_coarse / coef_from_coarse are to_coarse / from_coarse seen in
  coefficient space, and move values without changing them."""
  tr, path = _case(name)
  x = _x()
  c = tr.forward(x)
  for s in range(path.num_bands):
    grid = coarse.coarse_grid(tr, path.cutoffs, s)
    cz = grid.coef_to_coarse(c)
    np.testing.assert_allclose(grid.transform.inverse(cz), grid.to_coarse(x),
                               atol=2e-5)
    back = grid.coef_from_coarse(cz)
    low = np.asarray(path.band) <= s
    np.testing.assert_array_equal(np.asarray(back)[:, low],
                                  np.asarray(c)[:, low])
    assert not np.any(np.asarray(back)[:, ~low])
