"""Tests for kflow_jax.flow.paths: the K-Flow path, its target and band times."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax import kamp
from kflow_jax.flow import paths

SHAPE = (8, 8, 2)
B = 4


def build_path(name, **kwargs):
  """Path for transform `name` with as many even bands (3, 2, 1) as it has
  non-empty. PCA gets a basis fitted on random data with a decaying spectrum,
  so its ranks differ in energy as on real data."""
  opts = {}
  if name == "pca":
    rng = np.random.default_rng(0)
    scale = 1.0 / (1.0 + np.arange(int(np.prod(SHAPE))))
    data = rng.normal(size=(256, int(np.prod(SHAPE)))) * scale
    q, _ = np.linalg.qr(rng.normal(size=(data.shape[1],) * 2))
    batch = (data @ q.T).reshape((256,) + SHAPE).astype(np.float32)
    opts["basis"] = kamp.pca.fit_basis([batch])
  tr = kamp.get(name, shape=SHAPE, **opts)
  for s in (3, 2, 1):
    try:
      return paths.make_path(tr, num_scales=s, **kwargs)
    except ValueError as e:
      if "hold no coefficients" not in str(e):
        raise
  raise AssertionError("unreachable: one band is never empty")


def pair(seed=0):
  k0, k1 = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(k0, (B,) + SHAPE),
          jax.random.normal(k1, (B,) + SHAPE))


def away_from_edges(path, t):
  edges = np.concatenate([np.asarray(path.tau), path.windows().reshape(-1)])
  return np.all(np.abs(np.asarray(t)[:, None] - edges[None]) > 1e-3)


def _endpoint_cases():
  """Every transform x blend x overlap; the fast tier keeps every transform
  at one (blend, overlap) and every (blend, overlap) on Fourier, which
  covers each factor's code path, and -m slow runs the whole product."""
  first_blend = paths.BLENDS.names()[0]
  for name in kamp.names():
    for blend in paths.BLENDS.names():
      for overlap in (0.0, 0.3, 1.0):
        fast = (name == "fourier" or
                (blend == first_blend and overlap == 0.3))
        yield pytest.param(overlap, blend, name,
                           marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize("overlap,blend,name", _endpoint_cases())
def test_endpoints_and_target_is_time_derivative(name, blend, overlap):
  path = build_path(name, blend=blend, overlap=overlap)
  x0, x1 = pair()
  ones = jnp.ones((B,))
  np.testing.assert_array_equal(paths.interpolate(path, x0, x1, 0 * ones), x0)
  np.testing.assert_allclose(paths.interpolate(path, x0, x1, ones), x1,
                             atol=2e-5)
  rng = np.random.default_rng(1)
  t = rng.uniform(0.0, 1.0, B).astype(np.float32)
  while not away_from_edges(path, t):
    t = rng.uniform(0.0, 1.0, B).astype(np.float32)
  t = jnp.asarray(t)
  _, dxdt = jax.jvp(lambda s: paths.interpolate(path, x0, x1, s), (t,),
                    (ones,))
  u = paths.target_velocity(path, x0, x1, t)
  np.testing.assert_allclose(u, dxdt, rtol=1e-4, atol=1e-4)
  assert float(jnp.max(jnp.abs(u))) > 0.1  # not trivially zero
  # The fused (x_t, u_t) the loss uses: same values, same end points, and
  # its u_t is the time derivative of its own x_t.
  xt_f, u_f = paths.interpolate_and_target(path, x0, x1, t)
  np.testing.assert_allclose(xt_f, paths.interpolate(path, x0, x1, t),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(u_f, u, rtol=1e-6, atol=1e-6)
  (_, dxdt_f) = jax.jvp(
      lambda s: paths.interpolate_and_target(path, x0, x1, s)[0], (t,),
      (ones,))
  np.testing.assert_allclose(u_f, dxdt_f, rtol=1e-4, atol=1e-4)
  x_start, _ = paths.interpolate_and_target(path, x0, x1, 0 * ones)
  x_end, _ = paths.interpolate_and_target(path, x0, x1, ones)
  np.testing.assert_array_equal(x_start, x0)
  np.testing.assert_allclose(x_end, x1, atol=2e-5)


@pytest.mark.parametrize("name", ["identity", "fourier"])
def test_one_band_is_rectified_flow(name):
  path = paths.make_path(kamp.get(name, shape=SHAPE))
  x0, x1 = pair(2)
  t = jnp.asarray([0.0, 0.25, 0.6, 1.0])
  tb = t[:, None, None, None]
  np.testing.assert_allclose(paths.interpolate(path, x0, x1, t),
                             tb * x1 + (1 - tb) * x0, atol=1e-5)
  np.testing.assert_allclose(paths.target_velocity(path, x0, x1, t), x1 - x0,
                             atol=1e-5)
  x_t, u_t = paths.interpolate_and_target(path, x0, x1, t)
  np.testing.assert_allclose(x_t, tb * x1 + (1 - tb) * x0, atol=1e-5)
  np.testing.assert_allclose(u_t, x1 - x0, atol=1e-5)


def test_bands_flow_in_order_without_overlap():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=3)
  masks = paths.band_masks(path)
  t = jnp.asarray(path.tau[1:-1] + (0.5,), jnp.float32)  # tau_1, tau_2, 0.5
  a, da = paths.alpha(path, t)
  a, da = np.asarray(a), np.asarray(da)
  # At tau_1 band 0 is done, bands 1, 2 untouched and band 1 starts.
  assert np.all(a[0][masks[0]] == 1) and np.all(a[0][~masks[0]] == 0)
  assert np.all(da[0][masks[1]] > 0) and np.all(da[0][~masks[1]] == 0)
  assert np.all(a[1][masks[2]] == 0) and np.all(a[1][~masks[2]] == 1)
  np.testing.assert_array_equal(paths.active_band(path, t), [1, 2, 1])


def test_overlap_makes_neighbours_flow_together():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=2,
                         overlap=0.5)
  np.testing.assert_allclose(path.windows(), [[0, 0.625], [0.375, 1]])
  _, da = paths.alpha(path, jnp.asarray([0.45]))
  assert np.all(np.asarray(da) > 0)  # both bands move at t = 0.45


def test_energy_aware_band_times_and_measurement():
  tr = kamp.get("fourier", shape=SHAPE)
  cut = kamp.even_cutoffs(3)
  # 1/f-like data: a smooth field plus small noise puts energy in band 0.
  k = jax.random.split(jax.random.key(3), 3)
  smooth = jnp.cumsum(jnp.cumsum(jax.random.normal(k[0], (6,) + SHAPE), 1), 2)
  data = [smooth[:4], smooth[4:]]
  e = paths.measure_band_energy(tr, data, cut)
  assert isinstance(e, np.ndarray) and e.shape == (3,)
  direct = np.asarray(kamp.band_energy(tr, smooth, cut))
  np.testing.assert_allclose(e, direct, rtol=1e-5)
  np.testing.assert_allclose(e.sum(), np.mean(np.sum(np.square(smooth),
                                                     (1, 2, 3))), rtol=1e-4)
  path = paths.make_path(tr, cutoffs=cut, energies=e, gamma=0.5)
  lengths = np.diff(path.tau)
  np.testing.assert_allclose(lengths, e ** 0.5 / np.sum(e ** 0.5), rtol=1e-6)
  assert lengths[0] > lengths[2]  # the coarse band gets more time
  # Dict batches (the input pipeline format) give the same numbers.
  e2 = paths.measure_band_energy(tr, [{"image": d} for d in data], cut)
  np.testing.assert_allclose(e2, e, rtol=1e-6)
  # The stored config rebuilds the same path (resume, sampling).
  again = paths.make_path(tr, **json.loads(json.dumps(paths.to_config(path))))
  assert again.tau == path.tau
  np.testing.assert_array_equal(again.start, path.start)
  np.testing.assert_array_equal(again.energies, path.energies)
  # gamma = 0 is uniform whatever the energies.
  flat = paths.make_path(tr, cutoffs=cut, energies=e, gamma=0.0)
  np.testing.assert_allclose(flat.tau, [0, 1 / 3, 2 / 3, 1])


def test_sample_t_methods():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=3)
  rng = jax.random.key(4)
  t = paths.sample_t(rng, 512, path)
  assert 0 <= float(t.min()) and float(t.max()) < 1
  t = paths.sample_t(rng, 512, path, "logit_normal", logit_std=2.0)
  assert 0 < float(t.min()) and float(t.max()) < 1
  t = paths.sample_t(rng, 512, path, "band", band_weights=[0.0, 1.0, 0.0])
  assert np.all(np.asarray(paths.active_band(path, t)) == 1)
  t = paths.sample_t(rng, 4096, path, "band", band_weights=[3.0, 1.0, 0.0])
  frac = np.mean(np.asarray(paths.active_band(path, t)) == 0)
  assert 0.7 < frac < 0.8


def test_band_logit_normal_is_logit_normal_in_each_band_local_time():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=3)
  t = np.asarray(paths.sample_t(jax.random.key(5), 20000, path,
                                "band_logit_normal",
                                band_weights=[2.0, 1.0, 1.0],
                                logit_mean=-0.5, logit_std=0.7))
  band = np.asarray(paths.active_band(path, t))
  np.testing.assert_allclose(np.bincount(band) / t.size, [0.5, 0.25, 0.25],
                             atol=0.015)
  tau = np.asarray(path.tau)
  for s in range(3):
    u = (t[band == s] - tau[s]) / (tau[s + 1] - tau[s])
    z = np.log(u) - np.log1p(-u)
    assert abs(z.mean() + 0.5) < 0.05 and abs(z.std() - 0.7) < 0.05, s


def test_project_velocity_keeps_only_active_bands():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=3)
  v = pair(5)[0]
  t = jnp.full((B,), 0.5)
  c = path.transform.forward(paths.project_velocity(path, v, t))
  masks = paths.band_masks(path)
  assert float(jnp.max(jnp.abs(jnp.where(masks[1], 0.0, c)))) < 1e-5
  np.testing.assert_allclose(jnp.where(masks[1], c, 0.0),
                             jnp.where(masks[1], path.transform.forward(v), 0),
                             atol=1e-5)


def test_under_jit_t_saturates():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=2)
  x0, x1 = pair(6)
  f = jax.jit(lambda t: paths.interpolate(path, x0, x1, t))
  np.testing.assert_allclose(f(jnp.full((B,), 1.5)), f(jnp.ones((B,))))
  np.testing.assert_allclose(f(jnp.full((B,), -0.5)), x0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(cutoffs=(0.0, 0.6, 0.4, 1.0)), "strictly increasing"),
    (dict(cutoffs=(0.0, 0.5)), "from 0 to 1"),
    (dict(num_scales=2, cutoffs=(0.0, 0.3, 0.6, 1.0)), "disagrees"),
    (dict(num_scales=2, blend="cubic"), "unknown blend"),
    (dict(num_scales=2, overlap=1.5), "overlap"),
    (dict(num_scales=2, gamma=1.0), "needs band energies"),
    (dict(num_scales=2, energies=[1.0, 2.0, 3.0], gamma=1.0), "2 bands"),
    (dict(num_scales=2, energies=[1.0, 0.0], gamma=1.0), "> 0"),
    (dict(num_scales=2, tau=(0.0, 1.0)), "S \\+ 1"),
    (dict(num_scales=2, tau=(0.0, 0.0, 1.0)), "strictly increasing"),
    (dict(num_scales=500), "hold no coefficients"),
])
def test_make_path_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    paths.make_path(kamp.get("fourier", shape=SHAPE), **kwargs)


def test_t_errors():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=2)
  x0, x1 = pair()
  for bad in ([1.2, 0.0, 0.0, 0.0], [-0.1, 0.0, 0.0, 0.0],
              [np.nan, 0.0, 0.0, 0.0]):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
      paths.interpolate(path, x0, x1, jnp.asarray(bad))
  with pytest.raises(ValueError, match="one time per example"):
    paths.target_velocity(path, x0, x1, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="band_weights"):
    paths.sample_t(jax.random.key(0), 4, path, "band", band_weights=[1.0])
  with pytest.raises(ValueError, match="Unknown t sampling"):
    paths.sample_t(jax.random.key(0), 4, path, "beta")
  with pytest.raises(ValueError, match="no batches"):
    paths.measure_band_energy(path.transform, [], path.cutoffs)


def test_static_fields():
  path = paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=3,
                         overlap=0.2)
  for a in (path.start, path.length, path.end, path.band):
    assert isinstance(a, np.ndarray) and a.shape == path.transform.kappa.shape
  assert np.all(path.start < path.end)
  win = path.windows()
  for s in range(3):
    assert np.all(path.start[path.band == s] == win[s, 0])
  assert path.num_bands == 3 and len(path.tau) == 4


def test_noise_band_energy_is_the_coefficient_count():
  tr = kamp.get("dct", shape=SHAPE)  # orthonormal
  cut = kamp.even_cutoffs(2)
  e = paths.measure_noise_band_energy(tr, cut, num_examples=2048)
  band = kamp.band_index(tr.kappa, cut)
  counts = [float(np.sum(band == s)) for s in range(2)]
  np.testing.assert_allclose(e, counts, rtol=0.05)
  np.testing.assert_array_equal(
      e, paths.measure_noise_band_energy(tr, cut, num_examples=2048))
