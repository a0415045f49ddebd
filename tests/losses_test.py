"""Tests for kflow_jax.flow.losses: the K-Flow loss and its per-band aux."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from kflow_jax import kamp
from kflow_jax.flow import losses
from kflow_jax.flow import paths

SHAPE = (8, 8, 2)


def setup(batch=8, num_scales=3, seed=0):
  path = paths.make_path(kamp.get("fourier", shape=SHAPE),
                         num_scales=num_scales)
  k0, k1 = jax.random.split(jax.random.key(seed))
  return (path, jax.random.normal(k0, (batch,) + SHAPE),
          jax.random.normal(k1, (batch,) + SHAPE))


def test_exact_velocity_has_zero_loss():
  path, x0, x1 = setup()
  t = jnp.linspace(0.05, 0.95, 8)
  exact = lambda x, t, y: paths.target_velocity(path, x0, x1, t)
  loss, aux = losses.kflow_loss(exact, path, x1, jax.random.key(1), t=t,
                                x0=x0)
  assert float(loss) < 1e-10
  zero = lambda x, t, y: jnp.zeros_like(x)
  loss0, _ = losses.kflow_loss(zero, path, x1, jax.random.key(1), t=t, x0=x0)
  assert float(loss0) > 0.1


# One transform fast (the shipped Fourier), the others in -m slow.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "fourier" else pytest.mark.slow)
    for n in ("fourier", "wavelet", "dct")])
def test_model_sees_the_path_state(name):
  # The loss computes x_t and u_t fused (one forward, one stacked inverse);
  # the model must get exactly paths.interpolate's x_t and be scored against
  # target_velocity's u_t: this field is exact only at that x_t.
  path = paths.make_path(kamp.get(name, shape=SHAPE), num_scales=2)
  k0, k1 = jax.random.split(jax.random.key(3))
  x0, x1 = (jax.random.normal(k, (4,) + SHAPE) for k in (k0, k1))
  t = jnp.asarray([0.1, 0.4, 0.6, 0.9])

  def field(x, tt, y):
    del y
    x_t = paths.interpolate(path, x0, x1, tt)
    return 10.0 * (x - x_t) + paths.target_velocity(path, x0, x1, tt)
  loss, _ = losses.kflow_loss(field, path, x1, jax.random.key(1), t=t, x0=x0)
  assert float(loss) < 1e-9
  shifted = lambda x, tt, y: field(x + 0.01, tt, y)
  loss_s, _ = losses.kflow_loss(shifted, path, x1, jax.random.key(1), t=t,
                                x0=x0)
  assert float(loss_s) > 0.005


def test_per_band_sums_and_weights():
  path, x0, x1 = setup()
  t = jnp.asarray([0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
  zero = lambda x, t, y: jnp.zeros_like(x)
  loss, aux = losses.kflow_loss(zero, path, x1, jax.random.key(2), t=t, x0=x0)
  u = paths.target_velocity(path, x0, x1, t)
  err = np.mean(np.square(np.asarray(u)), axis=(1, 2, 3))
  np.testing.assert_array_equal(aux["band_count"], [2, 3, 3])
  np.testing.assert_allclose(
      aux["band_loss_sum"], [err[:2].sum(), err[2:5].sum(), err[5:].sum()],
      rtol=1e-5)
  np.testing.assert_allclose(loss, err.mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.band_losses(aux)[1], err[2:5].mean(),
                             rtol=1e-5)
  w = [2.0, 0.0, 1.0]
  lw, aux_w = losses.kflow_loss(zero, path, x1, jax.random.key(2), t=t, x0=x0,
                                band_loss_weights=w)
  band = np.asarray([0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_allclose(lw, np.mean(np.asarray(w)[band] * err), rtol=1e-5)
  np.testing.assert_allclose(aux_w["band_loss_sum"], aux["band_loss_sum"])


def test_grad_and_jit_with_drawn_t_and_labels():
  path, _, x1 = setup()
  y = jnp.arange(8) % 3

  def model(params, x, t, y):
    return params["a"] * x + params["b"][y][:, None, None, None] * t[
        :, None, None, None]

  params = {"a": jnp.asarray(0.3), "b": jnp.ones((3,))}

  @jax.jit
  def step(params, rng):
    return jax.value_and_grad(
        lambda p: losses.kflow_loss(partial(model, p), path, x1, rng, y,
                                    t_sampling="logit_normal")[0])(params)

  loss, g = step(params, jax.random.key(3))
  assert np.isfinite(float(loss))
  assert abs(float(g["a"])) > 0 and np.all(np.isfinite(np.asarray(g["b"])))


def test_band_sums_psum_across_devices():
  """Per-shard sums psummed over 8 devices equal the single-device sums."""
  n = jax.device_count()
  path, x0, x1 = setup(batch=2 * n)
  t = jax.random.uniform(jax.random.key(4), (2 * n,))
  zero = lambda x, t, y: 0.5 * x
  _, ref = losses.kflow_loss(zero, path, x1, jax.random.key(5), t=t, x0=x0)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))

  @jax.jit
  @partial(jax.shard_map, mesh=mesh, in_specs=(P("data"),) * 3,
           out_specs=P())
  def sharded(x1, x0, t):
    _, aux = losses.kflow_loss(zero, path, x1, jax.random.key(5), t=t, x0=x0)
    return jax.lax.psum((aux["band_loss_sum"], aux["band_count"]), "data")

  s, c = sharded(x1, x0, t)
  np.testing.assert_allclose(s, ref["band_loss_sum"], rtol=1e-5)
  np.testing.assert_array_equal(c, ref["band_count"])


def test_errors():
  path, x0, x1 = setup()
  zero = lambda x, t, y: jnp.zeros_like(x)
  with pytest.raises(ValueError, match="band_loss_weights"):
    losses.kflow_loss(zero, path, x1, jax.random.key(0),
                      band_loss_weights=[1.0, 1.0])
  with pytest.raises(ValueError, match="velocity_fn returned shape"):
    losses.kflow_loss(lambda x, t, y: x[..., :1], path, x1, jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    losses.kflow_loss(zero, path, x1[0], jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    losses.kflow_loss(zero, path, x1, jax.random.key(0), t=jnp.full((8,), 2.))


def test_target_scale_weights_undo_the_short_band_blow_up():
  tr = kamp.get("fourier", shape=SHAPE)
  path = paths.make_path(tr, num_scales=2, tau=(0.0, 0.8, 1.0))
  w = np.asarray(losses.target_scale_weights(path))
  # w_s proportional to L_s^2, mean weight 1 under uniform t.
  np.testing.assert_allclose(w[0] / w[1], 16.0, rtol=1e-6)
  np.testing.assert_allclose(0.8 * w[0] + 0.2 * w[1], 1.0, rtol=1e-6)
  # Weighted, the exact band target costs the same per unit of the
  # displacement in either band: w_s |u_s|^2 = w_s |d|^2 / L_s^2 is flat.
  np.testing.assert_allclose(w[0] / 0.8 ** 2, w[1] / 0.2 ** 2, rtol=1e-6)
  uniform = paths.make_path(tr, num_scales=2)
  np.testing.assert_allclose(losses.target_scale_weights(uniform), [1, 1],
                             rtol=1e-6)


# ----------------------------------------------------------------------------
# t exactly on a band edge, in training and in sampling.
#
# Band windows are [start, end): the edge tau_s belongs to band s, the band
# that starts there (t = 1 belongs to the last band). At t = tau_s band
# s - 1 has finished (alpha = 1, alpha' = 0) and band s starts (alpha = 0,
# alpha' = 1 / L_s): x_t is continuous across the edge, and the target u_t,
# hence the loss, is the limit from above. The edges below are not dyadic
# (0.3, 0.7), so float32 rounding is part of the test.

EDGE_TAU = (0.0, 0.3, 0.7, 1.0)


def _edge_path():
  tr = kamp.get("dct", shape=SHAPE)
  path = paths.make_path(tr, num_scales=3, tau=EDGE_TAU)
  k0, k1 = jax.random.split(jax.random.key(7))
  return (path, jax.random.normal(k0, (4,) + SHAPE),
          jax.random.normal(k1, (4,) + SHAPE))


def test_loss_at_a_band_edge_is_the_limit_from_above():
  path, x0, x1 = _edge_path()
  zero = lambda x, t, y: jnp.zeros_like(x)
  exact = lambda x, t, y: paths.target_velocity(path, x0, x1, t)
  sq = lambda u: np.mean(np.square(np.asarray(u)), axis=(1, 2, 3))
  for s, edge in enumerate(np.asarray(EDGE_TAU, np.float32)):
    at, above, below = (jnp.full((4,), v, jnp.float32) for v in (
        edge, np.nextafter(edge, np.float32(2)),
        np.nextafter(edge, np.float32(-1))))
    owner = min(s, path.num_bands - 1)  # t = 1: the last band
    np.testing.assert_array_equal(paths.active_band(path, at), owner)
    a, da = paths.alpha(path, at)
    bands = np.asarray(path.band)
    if s < path.num_bands:  # band s starts here
      np.testing.assert_array_equal(np.asarray(a)[0][bands == s], 0.0)
      np.testing.assert_allclose(
          np.asarray(da)[0][bands == s], 1 / (EDGE_TAU[s + 1] - EDGE_TAU[s]),
          rtol=1e-5)
    if s:  # band s - 1 is done: alpha 1, and it no longer moves
      np.testing.assert_array_equal(np.asarray(a)[0][bands == s - 1], 1.0)
      if s < path.num_bands:
        np.testing.assert_array_equal(np.asarray(da)[0][bands == s - 1], 0)
    x_at = paths.interpolate(path, x0, x1, at)
    u_at = paths.target_velocity(path, x0, x1, at)
    loss, aux = losses.kflow_loss(zero, path, x1, jax.random.key(0), t=at,
                                  x0=x0)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(loss, sq(u_at).mean(), rtol=1e-5)
    np.testing.assert_array_equal(aux["band_count"],
                                  4 * np.eye(path.num_bands)[owner])
    exact_loss, _ = losses.kflow_loss(exact, path, x1, jax.random.key(0),
                                      t=at, x0=x0)
    assert float(exact_loss) < 1e-10
    sides = [below] if s == path.num_bands else [above]
    if 0 < s < path.num_bands:
      sides.append(below)
    for side in sides:  # x_t is continuous from either side
      np.testing.assert_allclose(paths.interpolate(path, x0, x1, side), x_at,
                                 atol=1e-5)
    if s == path.num_bands:  # t = 1 is the end of the last band
      np.testing.assert_allclose(
          paths.target_velocity(path, x0, x1, below), u_at, rtol=1e-5)
      continue
    # The target (and the loss) is the limit from above ...
    np.testing.assert_allclose(paths.target_velocity(path, x0, x1, above),
                               u_at, rtol=1e-5, atol=1e-6)
    loss_above, _ = losses.kflow_loss(zero, path, x1, jax.random.key(0),
                                      t=above, x0=x0)
    np.testing.assert_allclose(loss_above, loss, rtol=1e-5)
    if s:  # ... not from below, where band s - 1 still moves.
      loss_below, _ = losses.kflow_loss(zero, path, x1, jax.random.key(0),
                                        t=below, x0=x0)
      assert abs(float(loss_below) - float(loss)) > 0.1 * float(loss)


# Projected output (the band I/O recipe) fast, unprojected in -m slow.
@pytest.mark.parametrize("project", [
    pytest.param(False, marks=pytest.mark.slow), True])
@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "rk4"])
def test_sampler_steps_that_land_on_band_edges(solver, project):
  """With the exact field of one pair (constant inside each band for the
  linear blend), any fixed-step solver whose steps end on the band edges
  lands on x1: a stage at a step's right edge is evaluated just below it,
  in its own band. Evaluated at the edge itself, Heun would mix in the
  next band's field and miss."""
  from kflow_jax.flow import sampling  # pylint: disable=g-import-not-at-top
  path, x0, x1 = _edge_path()
  field = lambda x, t: paths.target_velocity(path, x0, x1, t)
  for num_steps in (3, 6):
    edges = sampling.time_grid(path, num_steps)
    assert set(np.asarray(EDGE_TAU, np.float32)) <= set(edges)
    out = sampling.sample(field, path, x0, solver=solver,
                          num_steps=num_steps, project=project)
    np.testing.assert_allclose(out, x1, atol=2e-5)
  # Heun with its second stage at the edge itself (band s + 1's field).
  x = x0
  for t0, t1 in zip(EDGE_TAU[:-1], EDGE_TAU[1:]):
    f0 = field(x, jnp.full((4,), t0, jnp.float32))
    f1 = field(x + (t1 - t0) * f0, jnp.full((4,), t1, jnp.float32))
    x = x + (t1 - t0) / 2 * (f0 + f1)
  assert float(jnp.abs(x - x1).max()) > 0.1
