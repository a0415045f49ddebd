"""Tests for kflow_jax.flow.steering: noise mixing, per-band conditioning,
editing and restoration."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax import kamp
from kflow_jax.flow import guidance as guidance_lib
from kflow_jax.flow import paths
from kflow_jax.flow import sampling
from kflow_jax.flow import steering

SHAPE = (8, 8, 2)
B = 4


def fourier_path(**kwargs):
  kwargs.setdefault("num_scales", 3)
  return paths.make_path(kamp.get("fourier", shape=SHAPE), **kwargs)


def normal(seed, batch=B):
  return jax.random.normal(jax.random.key(seed), (batch,) + SHAPE)


def test_mix_noise_takes_each_band_from_its_source():
  path = fourier_path()
  a, b = normal(0), normal(1)
  tr = path.transform
  c = steering.mix_noise(path, [a, b], [1, 0, 0], in_coefficients=True)
  m = paths.band_masks(path)
  np.testing.assert_array_equal(np.asarray(c)[:, m[0]],
                                np.asarray(tr.forward(b))[:, m[0]])
  np.testing.assert_array_equal(np.asarray(c)[:, ~m[0]],
                                np.asarray(tr.forward(a))[:, ~m[0]])
  x = steering.mix_noise(path, [a, b], [1, 0, 0])
  np.testing.assert_allclose(tr.forward(x), c, atol=1e-5)
  with pytest.raises(ValueError, match="sources"):
    steering.mix_noise(path, [a, b], [0, 2, 0])
  with pytest.raises(ValueError, match="sources"):
    steering.mix_noise(path, [a, b], [0, 1])


@pytest.mark.parametrize("shared", [[2], [0]])
def test_shared_band_noise_gives_samples_with_identical_fixed_bands(shared):
  """Fix the fine (or coarse) band's noise across the batch, redraw the rest;
  sampling with band projection up to the fixed band's start leaves it
  bit-identical in every sample."""
  path = fourier_path()
  c0 = steering.shared_band_noise(jax.random.key(2), path, B, shared,
                                  in_coefficients=True)
  fixed = steering.bands_mask(path, shared)
  c0n = np.asarray(c0)
  for i in range(1, B):
    np.testing.assert_array_equal(c0n[i][fixed], c0n[0][fixed])
    assert np.all(c0n[i][~fixed] != c0n[0][~fixed])
  model = lambda x, t: jnp.tanh(x) - 0.5 * x
  if shared == [2]:
    c = sampling.sample(model, path, c0, solver="heun", num_steps=6,
                        project=True, init_in_coefficients=True,
                        return_coefficients=True, t_end=float(path.tau[2]))
    cn = np.asarray(c)
    for i in range(1, B):
      np.testing.assert_array_equal(cn[i][fixed], cn[0][fixed])
  # Spatial noise from the same draw agrees with the coefficient version.
  x0 = steering.shared_band_noise(jax.random.key(2), path, B, shared)
  np.testing.assert_allclose(path.transform.forward(x0), c0, atol=1e-5)
  with pytest.raises(ValueError, match="outside the configured bands"):
    steering.shared_band_noise(jax.random.key(2), path, B, [3])


# Euler fast, RK4 in -m slow.
@pytest.mark.parametrize("solver", [
    "euler", pytest.param("rk4", marks=pytest.mark.slow)])
@pytest.mark.parametrize("reimpose,project", [(False, False), (True, False),
                                              (True, True), (False, True)])
def test_restoration_from_own_coarse_bands_returns_image(solver, reimpose,
                                                         project):
  path = fourier_path()
  x1, noise = normal(3), normal(4)
  exact = lambda x, t: paths.target_velocity(path, noise, x1, t)
  for m in (0, 1):
    out = steering.restore(exact, path, x1, keep_bands=m, noise=noise,
                           solver=solver, num_steps=6, reimpose=reimpose,
                           project=project)
    np.testing.assert_allclose(out, x1, atol=3e-5)
  # Starting point: kept bands of the image, noise elsewhere.
  t0, xs = steering.restoration_start(path, x1, noise, 0)
  assert t0 == path.tau[1]
  m = paths.band_masks(path)
  cs, c1, cn = (np.asarray(path.transform.forward(v)) for v in (xs, x1, noise))
  np.testing.assert_allclose(cs[:, m[0]], c1[:, m[0]], atol=1e-5)
  np.testing.assert_allclose(cs[:, ~m[0]], cn[:, ~m[0]], atol=1e-5)


def test_restoration_of_degraded_image_keeps_observed_bands():
  """A model that ignores the observation still ends with the observed coarse
  bands when they are re-imposed; without re-imposition it drifts."""
  path = fourier_path()
  x1 = normal(5)
  obs = steering.degrade(x1, "lowres", 2)
  model = lambda x, t: jnp.sin(x)
  keep = steering.bands_mask(path, [0])
  tr = path.transform
  out = steering.restore(model, path, obs, jax.random.key(6), keep_bands=0,
                         num_steps=6, project=True, reimpose=True)
  np.testing.assert_allclose(np.asarray(tr.forward(out))[:, keep],
                             np.asarray(tr.forward(obs))[:, keep], atol=1e-5)
  out = steering.restore(model, path, obs, jax.random.key(6), keep_bands=0,
                         num_steps=6, reimpose=False)
  drift = np.abs(np.asarray(tr.forward(out) - tr.forward(obs))[:, keep])
  assert drift.max() > 1e-2
  # Editing = no re-imposition, same start.
  ed = steering.edit(model, path, obs, jax.random.key(6), keep_bands=0,
                     num_steps=6)
  np.testing.assert_allclose(ed, out, atol=1e-6)


def test_restoration_errors():
  path = fourier_path()
  x = normal(7)
  v = lambda x, t: x
  with pytest.raises(ValueError, match="nothing is left"):
    steering.restore(v, path, x, jax.random.key(0), keep_bands=2)
  with pytest.raises(ValueError, match="outside the configured bands"):
    steering.restore(v, path, x, jax.random.key(0), keep_bands=5)
  with pytest.raises(ValueError, match="rng or an explicit noise"):
    steering.restore(v, path, x, keep_bands=0)
  with pytest.raises(ValueError, match="same shape"):
    steering.restore(v, path, x, keep_bands=0, noise=x[:2])


def test_class_drop_and_band_guidance():
  path = fourier_path()

  def apply_fn(x, t, y):
    return jnp.broadcast_to(y.astype(jnp.float32)[:, None, None, None],
                            x.shape)

  x = jnp.zeros((3,) + SHAPE)
  y = jnp.asarray([1, 2, 3])
  t = jnp.asarray([0.1, 0.29, 0.5])
  v = steering.class_drop_velocity(apply_fn, path, y, num_classes=10,
                                   t_drop=0.3)(x, t)
  np.testing.assert_allclose(v[:, 0, 0, 0], [1, 2, 10])
  v = steering.class_drop_velocity(apply_fn, path, y, num_classes=10,
                                   t_drop=0.3, guidance=2.0)(x, t)
  np.testing.assert_allclose(v[:, 0, 0, 0], [10 + 2 * (1 - 10),
                                             10 + 2 * (2 - 10), 10])
  sched = steering.band_guidance(path, 3.0, [0])
  assert sched == (3.0, 1.0, 1.0)
  t = jnp.asarray([0.1, 0.5, 0.9])  # one per band
  v = guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=10,
                            guidance=sched)(x, t)
  np.testing.assert_allclose(v[:, 0, 0, 0], [10 + 3 * (1 - 10), 2, 3])
  assert steering.band_end_time(path, 0) == path.tau[1]
  with pytest.raises(ValueError, match="outside the configured bands"):
    steering.band_guidance(path, 3.0, [0, 3])
  with pytest.raises(ValueError, match="t_drop"):
    steering.class_drop_velocity(apply_fn, path, y, num_classes=10,
                                 t_drop=1.3)


def test_degrade():
  x = normal(8)
  const = jnp.ones((1,) + SHAPE)
  np.testing.assert_allclose(steering.degrade(const, "lowres", 4), const,
                             atol=1e-6)
  blurred = steering.degrade(x, "blur", 1.0)
  np.testing.assert_allclose(blurred.mean(axis=(1, 2)), x.mean(axis=(1, 2)),
                             atol=1e-5)
  assert float(jnp.var(blurred)) < float(jnp.var(x))
  with pytest.raises(ValueError, match="dividing"):
    steering.degrade(x, "lowres", 3)
  with pytest.raises(ValueError, match="Unknown degradation"):
    steering.degrade(x, "jpeg", 1)
