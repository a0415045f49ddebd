"""Tests for kflow_jax.flow.sampling: grids, solver orders, diffrax, CFG,
sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kflow_jax import kamp
from kflow_jax.flow import guidance as guidance_lib
from kflow_jax.flow import paths
from kflow_jax.flow import sampling

SHAPE = (8, 8, 2)
B = 8


def fourier_path(**kwargs):
  kwargs.setdefault("num_scales", 3)
  return paths.make_path(kamp.get("fourier", shape=SHAPE), **kwargs)


def pair(seed=0):
  k0, k1 = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(k0, (B,) + SHAPE),
          jax.random.normal(k1, (B,) + SHAPE))


def steps_per_band(path, g):
  tau = np.float32(path.tau)
  return [int(np.sum((g[:-1] >= a) & (g[:-1] < b)))
          for a, b in zip(tau[:-1], tau[1:])]


def test_grid_has_every_band_edge():
  path = fourier_path(energies=[4.0, 2.0, 1.0], gamma=1.0)
  g = sampling.time_grid(path, 14)
  assert g.dtype == np.float32 and g[0] == 0 and g[-1] == 1
  assert len(g) == 15
  for tau in np.float32(path.tau):
    assert tau in g
  # Steps in proportion to band length: 4:2:1 of 14 steps.
  assert steps_per_band(path, g) == [8, 4, 2]
  g = sampling.time_grid(path, steps_per_band=[1, 2, 5])
  assert steps_per_band(path, g) == [1, 2, 5]
  over = fourier_path(overlap=0.4)
  g = sampling.time_grid(over, 12)
  for edge in over.windows().reshape(-1):
    assert edge in g
  g = sampling.time_grid(path, 14, extra_times=[0.3])
  assert np.float32(0.3) in g and len(g) == 15
  g = sampling.time_grid(path, 4, t_start=0.5)
  assert g[0] == np.float32(0.5) and np.float32(path.tau[2]) in g


def test_steps_by_energy():
  # sqrt(4):sqrt(1) = 2:1 of 9 steps; energy 4:1 of 10; power 0: even.
  assert sampling.steps_by_energy([4.0, 1.0], 9) == (6, 3)
  assert sampling.steps_by_energy([4.0, 1.0], 10, power=1.0) == (8, 2)
  assert sampling.steps_by_energy([4.0, 1.0], 6, power=0.0) == (3, 3)
  # Every band keeps one step however small its energy.
  assert sampling.steps_by_energy([1e6, 1.0, 1.0], 5, power=1.0) == (3, 1, 1)
  path = fourier_path()
  alloc = sampling.steps_by_energy([9.0, 4.0, 1.0], 12)
  assert sum(alloc) == 12
  g = sampling.time_grid(path, steps_per_band=alloc)
  assert steps_per_band(path, g) == list(alloc)
  with pytest.raises(ValueError, match="fewer than"):
    sampling.steps_by_energy([1.0, 1.0, 1.0], 2)
  with pytest.raises(ValueError, match="energies"):
    sampling.steps_by_energy([1.0, 0.0], 4)
  with pytest.raises(ValueError, match="power"):
    sampling.steps_by_energy([1.0, 2.0], 4, power=-1.0)


def test_grid_errors():
  path = fourier_path(overlap=0.4)
  with pytest.raises(ValueError, match="fewer than"):
    sampling.time_grid(path, 3)
  with pytest.raises(ValueError, match="one per band"):
    sampling.time_grid(path, steps_per_band=[2, 2])
  with pytest.raises(ValueError, match="exactly one"):
    sampling.time_grid(path)
  with pytest.raises(ValueError, match="extra_times"):
    sampling.time_grid(path, 10, extra_times=[1.5])
  with pytest.raises(ValueError, match="t_start"):
    sampling.time_grid(path, 10, t_start=0.7, t_end=0.2)
  with pytest.raises(ValueError, match="unknown solver"):
    sampling.sample(lambda x, t: x, path, pair()[0], solver="rk45",
                    num_steps=10)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2),
                                          ("heun", 2), ("rk4", 4)])
def test_convergence_order_on_linear_field(solver, order):
  """dx/dt = lam(t) x with lam switching at the band edges has the exact
  solution x0 exp(integral lam); halving the step divides the error by
  2 ** order."""
  path = fourier_path()
  lams = jnp.asarray([-3.0, 1.5, -2.0])
  x0 = pair(1)[0]

  def v(x, t):
    lam = lams[paths.active_band(path, t)]
    return lam[:, None, None, None] * x

  exact = x0 * np.exp(np.sum(np.asarray(lams) * np.diff(path.tau)))
  errs = []
  for n in (6, 12, 24):
    out = jax.jit(lambda x: sampling.sample(v, path, x, solver=solver,
                                            num_steps=n))(x0)
    errs.append(float(jnp.max(jnp.abs(out - exact))))
  rates = np.log2(np.asarray(errs[:-1]) / np.asarray(errs[1:]))
  # The coarsest pair is pre-asymptotic; the finer one must show the order.
  assert np.all(rates > order - 0.3) and abs(rates[-1] - order) < 0.3, (
      errs, rates)


# Overlapping bands (the harder grid) fast, no overlap in -m slow.
@pytest.mark.parametrize("solver", list(sampling.FIXED_SOLVERS))
@pytest.mark.parametrize("overlap", [
    pytest.param(0.0, marks=pytest.mark.slow), 0.5])
def test_exact_conditional_velocity_reaches_data(solver, overlap):
  """The exact conditional field is piecewise constant between switch times
  (linear blend), so a band-aligned grid integrates it exactly."""
  path = fourier_path(overlap=overlap)
  x0, x1 = pair(2)
  v = lambda x, t: paths.target_velocity(path, x0, x1, t)
  out = sampling.sample(v, path, x0, solver=solver, num_steps=9)
  np.testing.assert_allclose(out, x1, atol=2e-5)
  # A grid that ignores the band edges is not exact: the test can fail.
  bad = sampling.integrate(lambda x, t: v(x, jnp.full((B,), t)), x0,
                           np.linspace(0, 1, 5), solver)
  assert float(jnp.max(jnp.abs(bad - x1))) > 1e-2


@pytest.mark.parametrize("solver", list(sampling.ADAPTIVE_SOLVERS))
def test_adaptive_reports_nfe_and_stops_at_jumps(solver):
  path = fourier_path(overlap=0.2)
  lams = jnp.asarray([-3.0, 1.5, -2.0])
  x0 = pair(3)[0]
  calls = []

  def v(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return lams[paths.active_band(path, t)][:, None, None, None] * x

  out, stats = jax.jit(lambda x: sampling.sample(
      v, path, x, solver=solver, rtol=1e-6, atol=1e-6, record_steps=True))(x0)
  jax.block_until_ready(out)
  exact = x0 * np.exp(np.sum(np.asarray(lams) * np.diff(path.tau)))
  np.testing.assert_allclose(out, exact, rtol=1e-4, atol=1e-4)
  assert int(stats["nfe"]) == len(calls)
  assert int(stats["num_rejected_steps"]) == 0
  ts = np.asarray(stats["step_ts"])
  ts = ts[np.isfinite(ts)]
  for jump in sampling.switch_times(path):
    assert np.min(np.abs(ts - jump)) <= 2 * np.spacing(np.float32(jump))
  assert ts[-1] == 1.0


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_band_projection_keeps_unreached_noise_bit_identical(solver, overlap):
  path = fourier_path(overlap=overlap)
  x0, _ = pair(4)
  c0 = path.transform.forward(x0)
  model = lambda x, t: jnp.sin(3 * x) + t[:, None, None, None]  # moves all
  t_end = float(path.tau[1])
  c = sampling.sample(model, path, c0, solver=solver, num_steps=4,
                      project=True, init_in_coefficients=True,
                      return_coefficients=True, t_end=t_end)
  unreached = path.start > np.float32(t_end)
  assert unreached.any()
  np.testing.assert_array_equal(np.asarray(c)[:, unreached],
                                np.asarray(c0)[:, unreached])
  moved = paths.band_masks(path)[0]
  assert float(jnp.max(jnp.abs(c - c0)[:, moved])) > 1e-2
  # Without projection the model moves every band.
  x = sampling.sample(model, path, x0, solver=solver, num_steps=4,
                      t_end=t_end)
  c_np = path.transform.forward(x)
  assert float(jnp.max(jnp.abs(c_np - c0)[:, unreached])) > 1e-2


def test_projection_freezes_finished_bands():
  """With projection, band 0 stops at tau_1: a model that keeps pushing it
  later has no effect on it (bit-identical in coefficient space)."""
  path = fourier_path()
  x0 = pair(5)[0]
  model = lambda x, t: jnp.cos(x) + 1.0
  mid = sampling.sample(model, path, x0, solver="heun", num_steps=2,
                        project=True, return_coefficients=True,
                        t_end=float(path.tau[1]))
  out = sampling.sample(model, path, mid, solver="heun", num_steps=4,
                        project=True, init_in_coefficients=True,
                        return_coefficients=True,
                        t_start=float(path.tau[1]))
  done = paths.band_masks(path)[0]
  np.testing.assert_array_equal(np.asarray(out)[:, done],
                                np.asarray(mid)[:, done])


def test_sharded_batch_under_jit():
  n = jax.device_count()
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  path = fourier_path()
  k0, k1 = jax.random.split(jax.random.key(6))
  x0 = jax.random.normal(k0, (n,) + SHAPE)
  x1 = jax.random.normal(k1, (n,) + SHAPE)
  sh = NamedSharding(mesh, P("data"))
  model = lambda x, t: paths.target_velocity(path, x0, x1, t) + 0.1 * x
  ref = sampling.sample(model, path, x0, solver="rk4", num_steps=6,
                        project=True)
  f = jax.jit(lambda x: sampling.sample(model, path, x, solver="rk4",
                                        num_steps=6, project=True))
  out = f(jax.device_put(x0, sh))
  np.testing.assert_allclose(out, ref, atol=1e-5)
  out_a, st = jax.jit(lambda x: sampling.sample(model, path, x,
                                                solver="tsit5"))(
                                                    jax.device_put(x0, sh))
  assert int(st["nfe"]) > 0 and np.all(np.isfinite(np.asarray(out_a)))


def test_cfg_constant_and_per_band():
  path = fourier_path()
  calls = []

  def apply_fn(x, t, y):  # v = label everywhere: v_c = y, v_u = num_classes
    calls.append(x.shape[0])
    return jnp.broadcast_to(y.astype(jnp.float32)[:, None, None, None],
                            x.shape)

  x = jnp.zeros((3,) + SHAPE)
  y = jnp.asarray([0, 1, 2])
  t = jnp.asarray([0.1, 0.5, 0.9])  # one per band
  v = guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=5, guidance=1.5)(
      x, t)
  np.testing.assert_allclose(v[:, 0, 0, 0], 5 + 1.5 * (np.asarray([0, 1, 2])
                                                       - 5))
  assert calls[-1] == 6  # one batched call of 2B
  sched = [2.0, 1.0, 0.0]
  v = guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=5,
                            guidance=sched)(x, t)
  np.testing.assert_allclose(v[:, 0, 0, 0], [5 + 2 * (0 - 5), 1, 5])
  v = guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=5)(x, t)
  np.testing.assert_allclose(v[:, 0, 0, 0], [0, 1, 2])
  assert calls[-1] == 3  # guidance 1: a single conditional call
  with pytest.raises(ValueError, match="per-band guidance schedule"):
    guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=5,
                          guidance=[1.0, 2.0])
  with pytest.raises(ValueError, match="num_classes"):
    guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=0)


def test_coefficient_options_need_projection():
  path = fourier_path()
  with pytest.raises(ValueError, match="project=True"):
    sampling.sample(lambda x, t: x, path, pair()[0], num_steps=6,
                    return_coefficients=True)
  with pytest.raises(ValueError, match="fixed-step"):
    sampling.sample(lambda x, t: x, path, pair()[0], solver="dopri5",
                    post_step=lambda y, t: y)


def test_band_allocation_gives_every_band_its_share_of_steps():
  # Uneven band times: the last band has 4 % of t.
  path = fourier_path(num_scales=3, tau=(0.0, 0.66, 0.96, 1.0))
  by_time = steps_per_band(path, sampling.time_grid(path, 30))
  by_band = steps_per_band(path, sampling.time_grid(path, 30,
                                                    allocation="band"))
  assert by_time == [20, 9, 1]
  assert by_band == [10, 10, 10]
  # Over a span that starts mid-band, the partial band counts its fraction.
  g = sampling.time_grid(path, 30, t_start=0.33, allocation="band")
  assert steps_per_band(path, g) == [6, 12, 12]
  assert sampling.step_share(path, 0.33, 1.0, "band") == pytest.approx(
      2.5 / 3)
  assert sampling.step_share(path, 0.33, 1.0, "time") == pytest.approx(0.67)
  with pytest.raises(ValueError, match="step_allocation"):
    sampling.time_grid(path, 30, allocation="energy")


def test_cost_allocation_gives_cheap_bands_more_steps():
  """n_s ~ L_s / sqrt(c_s): on 3 even bands with calls costing 1/16, 1/4
  and 1 (a scale-adaptive run's 8x8, 16x16, 32x32 grids), 4 : 2 : 1."""
  path = fourier_path(num_scales=3)
  grid = sampling.time_grid(path, 35, allocation="cost",
                            band_costs=(1 / 16, 1 / 4, 1.0))
  assert steps_per_band(path, grid) == [20, 10, 5]
  # Without costs (a full-resolution run) it is the time allocation.
  np.testing.assert_array_equal(
      sampling.time_grid(path, 35, allocation="cost"),
      sampling.time_grid(path, 35))
  assert sampling.step_share(path, 0.2, 0.7, "cost") == pytest.approx(0.5)
  with pytest.raises(ValueError, match="band_costs"):
    sampling.time_grid(path, 35, allocation="cost", band_costs=(1.0, 0.0,
                                                                 1.0))
