"""Tests for scale-adaptive compute (kflow_jax/flow/adaptive.py,
adaptive_loss.py, adaptive_sampler.py and the run's field): each band's
network on bands 0..s only.

The backbones at every band's grid (one set of weights; the DiT's position
embedding in the full-resolution frame), the field that is zero outside
band s, the exactness of the per-band loss and sampler against the
full-resolution ones for a field that depends on bands 0..s only (on 1
and 8 devices), the sub-batch sizes and times, the refusals, and the
command a user types (train, resume, sample, eval).
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax import config_lib
from kflow_jax.flow import adaptive
from kflow_jax.flow import adaptive_loss
from kflow_jax.flow import adaptive_sampler
from kflow_jax.run import experiment
from kflow_jax import generate
from kflow_jax import kamp
from kflow_jax import models
from kflow_jax.flow import paths
from kflow_jax.flow import sampling
from kflow_jax.infra import sharding
from kflow_jax.models import layers

import perturb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (16, 16, 2)
DCT_RMAX = np.sqrt(15.0 ** 2 + 15.0 ** 2)
FFT_RMAX = np.sqrt(8.0 ** 2 + 8.0 ** 2)
# Three bands on 4x4, 8x8, 16x16 (the fitting cut-offs of coarse_test).
CASES = {
    "haar": (lambda: kamp.get("wavelet", SHAPE, wavelet="haar", levels=2),
             kamp.even_cutoffs(3)),
    "dct": (lambda: kamp.get("dct", SHAPE),
            (0.0, 4 / DCT_RMAX, 8 / DCT_RMAX, 1.0)),
    "fourier": (lambda: kamp.get("fourier", SHAPE),
                (0.0, 2 / FFT_RMAX, 4 / FFT_RMAX, 1.0)),
}


def _path(name, **kwargs):
  build, cutoffs = CASES[name]
  return paths.make_path(build(), cutoffs=cutoffs, **kwargs)


def _x(shape=SHAPE, batch=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(
      (batch,) + tuple(shape)).astype(np.float32))


def _perturbed(variables, seed=0, scale=0.1):
  """Random weights: adaLN-Zero makes an initialized DiT output 0."""
  return perturb.perturbed(variables, seed, scale)




# ----------------------------------------------------------------------------
# Backbones at every band's grid.


@pytest.mark.slow
def test_backbones_run_at_every_band_grid_with_one_set_of_weights():
  plan = adaptive.plan(_path("haar"))
  assert [g.shape for g in plan.grids] == [(4, 4, 2), (8, 8, 2), (16, 16, 2)]
  assert [f.factor for f in plan.frames] == [4, 2, 1]
  np.testing.assert_allclose(plan.pixel_ratio, [1 / 16, 1 / 4, 1])
  t = jnp.full((2,), 0.3)
  for name, kw in (("dit", dict(size="mu", patch_size=2)),
                   ("moe_dit", dict(size="mu", patch_size=2,
                                    tau=plan.path.tau)),
                   ("unet", dict(size="mu"))):
    model = models.get(name, **kw)
    adaptive.check_model(plan, model)
    v = model.init(jax.random.PRNGKey(0), _x(batch=2), t)
    for g, f in zip(plan.grids, plan.frames):
      out = model.apply(v, _x(g.shape, 2), t, frame=f)
      assert out.shape == (2,) + g.shape and out.dtype == jnp.float32
  # The smallest grids: one patch for the DiT, 2 ** (levels - 1) for the
  # U-Net; smaller ones are refused by name.
  big = models.get("unet", size="mu", channel_mult=(1, 1, 2, 2))
  assert big.grid_multiple == 8
  with pytest.raises(ValueError, match=r"band 0 .* 4x4 grid .* multiples "
                     r"of 8 \(its smallest input is 8x8\)"):
    adaptive.check_model(plan, big)
  vb = big.init(jax.random.PRNGKey(0), _x(batch=1), t[:1])
  with pytest.raises(ValueError, match="smallest input it accepts is 8x8"):
    big.apply(vb, _x((4, 4, 2), 1), t[:1])
  with pytest.raises(ValueError, match="fixed input size"):
    adaptive.check_model(plan, models.get("mlp", size="mu"))


def _embed(model, variables, gh, gw, frame=None):
  """The position embedding the DiT adds to a gh x gw token grid."""
  p = model.patch_size
  x = jnp.zeros((1, gh * p, gw * p, 2))
  _, inter = model.apply(variables, x, jnp.zeros((1,)), frame=frame,
                         mutable=["intermediates"])
  return np.asarray(inter["intermediates"]["pos_embed"][0])


def _sincos_at(ph, pw, dim):
  """The 2-D sin-cos embedding at arbitrary (row, col) positions, written
  out independently of layers.sincos_2d."""
  omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
  axis = lambda p: np.concatenate([np.sin(np.outer(p, omega)),
                                   np.cos(np.outer(p, omega))], 1)
  return np.concatenate([axis(pw), axis(ph)], 1)


@pytest.mark.slow
@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_coarse_tokens_get_the_embedding_of_their_full_grid_place(pos_embed):
  model = models.get("dit", size="mu", patch_size=2, pos_embed=pos_embed)
  v = model.init(jax.random.PRNGKey(0), _x(batch=1), jnp.zeros((1,)))
  full = _embed(model, v, 8, 8).reshape(8, 8, -1)
  # Factor 1 is the full grid, as without a frame.
  np.testing.assert_allclose(
      _embed(model, v, 8, 8, layers.Frame(1, 0.0)).reshape(8, 8, -1), full,
      atol=1e-6)
  # Fourier's coarse pixels sample the image at n f (offset 0): with
  # patch 1 a coarse token sits exactly on full token (i f, j f).
  m1 = models.get("dit", size="mu", patch_size=1, pos_embed=pos_embed)
  v1 = m1.init(jax.random.PRNGKey(0), _x(batch=1), jnp.zeros((1,)))
  full1 = _embed(m1, v1, 16, 16).reshape(16, 16, -1)
  for f in (2, 4):
    coarse_emb = _embed(m1, v1, 16 // f, 16 // f, layers.Frame(f, 0.0))
    np.testing.assert_allclose(coarse_emb.reshape(16 // f, 16 // f, -1),
                               full1[::f, ::f], atol=1e-5)
  if pos_embed != "sincos":
    return
  # Block-centred grids (haar, dct: pixel n at n f + (f - 1) / 2): the
  # embedding at the centre of the full pixels a coarse token covers.
  for f in (2, 4):
    n = 8 // f
    got = _embed(model, v, n, n, layers.Frame(f, (f - 1) / 2))
    centre = lambda i: np.mean([(q * f + (f - 1) / 2 + 0.5) / 2 - 0.5
                                for q in range(2 * i, 2 * i + 2)])
    ph, pw = np.meshgrid([centre(i) for i in range(n)],
                         [centre(j) for j in range(n)], indexing="ij")
    np.testing.assert_allclose(
        got, _sincos_at(ph.reshape(-1), pw.reshape(-1), model.dims[0]),
        atol=1e-5)
    # That is the centre of the f x f full-grid tokens the coarse token
    # covers (full tokens f i .. f i + f - 1).
    assert np.allclose(ph[:, 0], [f * i + (f - 1) / 2 for i in range(n)])


# ----------------------------------------------------------------------------
# The field.


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_adaptive_velocity_is_zero_outside_the_band(name):
  path = _path(name)
  plan = adaptive.plan(path)
  model = models.get("dit", size="mu", patch_size=2)
  v = _perturbed(model.init(jax.random.PRNGKey(0), _x(batch=2),
                            jnp.zeros((2,))))
  apply = lambda z, t, y, frame: model.apply(v, z, t, y, frame=frame)
  x = _x(batch=2)
  tr = path.transform
  for s, (g, f) in enumerate(zip(plan.grids, plan.frames)):
    t = jnp.full((2,), (path.tau[s] + path.tau[s + 1]) / 2)
    out = adaptive.band_velocity(apply, g, f, x, t)
    c = np.abs(np.asarray(tr.forward(out)))
    band = np.asarray(path.band)
    assert c[:, band != s].max() < 1e-5 * max(c.max(), 1.0)
    assert c[:, band == s].max() > 1e-3
    # The band picked from t (lax.switch, jitted) is the same field.
    np.testing.assert_allclose(
        jax.jit(lambda x, t: adaptive.velocity(apply, plan, x, t))(x, t),
        out, atol=1e-5)


# ----------------------------------------------------------------------------
# A field of bands 0..s only, on any grid: the exactness tests.


class _BandField:
  """A nonlinear velocity that depends only on bands 0..s(t) and can run on
  the full grid or on any band's coarse grid: per coefficient
  g(kappa, t) c (1 + tanh(E / 512) / 2), E = sum of w |c|^2, on the
  coefficients of bands 0..s(t), the same values on every grid
  (coefficients keep their value and kappa on a coarse grid). Stands in
  for a network (model.apply)."""

  def __init__(self, path, plan):
    self.path = path
    self.by_shape = {tuple(path.transform.shape): (path.transform,
                                                   np.asarray(path.band))}
    for g in plan.grids:
      self.by_shape.setdefault(tuple(g.shape), (g.transform, g.bands))

  def apply(self, variables, z, t, y=None, train=False, frame=None):
    del variables, y, train, frame
    tr, bands = self.by_shape[tuple(z.shape[1:])]
    s = kamp.band_of_time(t, self.path.tau).reshape(
        (-1,) + (1,) * bands.ndim)
    keep = (bands >= 0) & (bands <= s)
    c = jnp.where(keep, tr.forward(z), 0)
    energy = jnp.sum(tr.weight * jnp.abs(c) ** 2,
                     axis=tuple(range(1, c.ndim)), keepdims=True)
    tb = t.reshape((-1,) + (1,) * bands.ndim)
    gain = 1.0 + tb * tr.kappa + jnp.sin(7.0 * tr.kappa)
    return tr.inverse(gain * c * (1.0 + 0.5 * jnp.tanh(energy / 512.0)))


def _reference_loss(path, field, x1, keys, sizes, shares, method="uniform"):
  """Full-resolution K-Flow loss of the band-s-projected field, per example
  with the same noise, times and the per-band weights p_s / B_s."""
  total, lo, per_band = 0.0, 0, []
  for s, n in enumerate(sizes):
    errs = []
    for i in range(lo, lo + n):
      k_loss, _ = jax.random.split(keys[i])
      r_noise, r_t = jax.random.split(k_loss)
      x0 = jax.random.normal(r_noise, SHAPE, jnp.float32)[None]
      t = adaptive_loss.band_time(r_t, path, s, method)[None]
      x_t, u_t = paths.interpolate_and_target(path, x0, x1[i:i + 1], t)
      v = paths.project_velocity(path, field.apply({}, x_t, t), t)
      errs.append(float(jnp.mean(jnp.square(v - u_t))))
    total += shares[s] / n * sum(errs)
    per_band.append(sum(errs))
    lo += n
  return total, per_band


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "haar" else pytest.mark.slow)
    for n in sorted(CASES)])  # haar fast, the rest in -m slow
def test_loss_equals_masked_full_resolution_loss(name):
  path = _path(name, blend="smoothstep")
  plan = adaptive.plan(path)
  field = _BandField(path, plan)
  b = 16
  x1 = _x(batch=b, seed=3)
  keys = jax.random.split(jax.random.PRNGKey(7), b)
  setup = adaptive_loss.make_loss_setup(path)
  sizes = adaptive_loss.batch_sizes(setup.shares, b)
  assert sizes == (6, 5, 5)
  want, per_band = _reference_loss(path, field, x1, keys, sizes,
                                   setup.shares)
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = sharding.make_mesh(1, devices)
    fn = adaptive_loss.sharded_loss_and_grad(field, plan, setup, mesh,
                                             with_grad=False)
    bsh = sharding.batch_sharding(mesh)
    loss, aux, _ = jax.jit(fn)({}, {"image": jax.device_put(x1, bsh)},
                               jax.device_put(keys, bsh))
    # On 8 devices each band's sub-batch is padded to 8 (masked).
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    np.testing.assert_allclose(aux["band_loss_sum"], per_band, rtol=2e-5)
    np.testing.assert_array_equal(aux["band_count"], sizes)
    assert float(aux["mask_count"]) == b


def test_loss_weights_keep_it_unbiased_for_any_sub_batch_sizes():
  """Uneven explicit sizes and band loss weights: each band's mean error
  enters with p_s w_s, whatever B_s."""
  path = _path("haar")
  plan = adaptive.plan(path)
  field = _BandField(path, plan)
  b = 12
  x1 = _x(batch=b, seed=4)
  keys = jax.random.split(jax.random.PRNGKey(8), b)
  setup = adaptive_loss.make_loss_setup(
      path, band_loss_weights=(1.0, 2.0, 0.5), band_batch_sizes=(2, 3, 7))
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  # Jitted: shard_map run op by op takes minutes on the CPU.
  loss, aux, _ = jax.jit(adaptive_loss.sharded_loss_and_grad(
      field, plan, setup, mesh, with_grad=False))({}, {"image": x1}, keys)
  _, per_band = _reference_loss(path, field, x1, keys, (2, 3, 7),
                                setup.shares)
  means = np.asarray(per_band) / np.asarray([2, 3, 7])
  want = np.sum(np.asarray(setup.shares) * [1.0, 2.0, 0.5] * means)
  np.testing.assert_allclose(float(loss), want, rtol=2e-5)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "haar" else pytest.mark.slow)
    for n in sorted(CASES)])  # haar fast, the rest in -m slow
def test_sampler_equals_full_resolution_sampler(name):
  """Each band's steps on its grid give the full-resolution projected
  sampler's result from the same noise (the reduction is exact)."""
  path = _path(name)
  plan = adaptive.plan(path)
  field = _BandField(path, plan)
  spec = generate.parse_spec(config_lib.base().sample, 0, path.num_bands)
  spec = spec._replace(solver="heun", num_steps=9)
  build = lambda params, y, frame: (
      lambda z, t: field.apply({}, z, t, frame=frame))
  x0 = _x(batch=3, seed=5)
  x, stats = jax.jit(adaptive_sampler.make_sampler(build, plan, spec))(
      {}, x0, None)
  want = sampling.sample(lambda x, t: field.apply({}, x, t), path, x0,
                         solver="heun", num_steps=9, project=True)
  np.testing.assert_allclose(x, want, atol=2e-5)
  assert stats["nfe"] == 18 and list(stats["nfe_per_band"]) == [6, 6, 6]
  np.testing.assert_allclose(stats["nfe_full_equivalent"],
                             6 * (1 / 16 + 1 / 4 + 1))
  # A span inside the path (the band strip) runs only its bands.
  x, stats = adaptive_sampler.make_sampler(build, plan, spec)(
      {}, x0, None, t_start=float(path.tau[1]), t_end=1.0, num_steps=4)
  assert list(stats["nfe_per_band"]) == [0, 4, 4]
  want = sampling.sample(lambda x, t: field.apply({}, x, t), path, x0,
                         solver="heun", num_steps=4, project=True,
                         t_start=float(path.tau[1]))
  np.testing.assert_allclose(x, want, atol=2e-5)


class _Squash:
  """tanh of a field: far from homogeneous, so its units matter."""

  def __init__(self, inner):
    self.inner = inner

  def apply(self, variables, z, t, y=None, train=False, frame=None):
    return jnp.tanh(self.inner.apply(variables, z, t, y, train, frame))


class _InUnits:
  """`inner` as the backbone of a run in "mean" units would be if the
  scaling lived in the model: inner(z / f) * f on a grid with factor f.
  A "coefficients" run on this model must equal a "mean" run on `inner`."""

  def __init__(self, inner):
    self.inner = inner

  def apply(self, variables, z, t, y=None, train=False, frame=None):
    f = float(frame.factor if frame is not None else 1)
    return self.inner.apply(variables, z / f, t, y, train, frame) * f


def test_mean_units_scale_each_coarse_grid_by_its_factor():
  """in_units: f g(z / f) on a grid of factor f, g itself on the full grid
  and in "coefficients"; the Haar grids of 3 bands have factors 4, 2, 1
  and the coarse grid holds f times the block means of the image."""
  path = _path("haar")
  plan = adaptive.plan(path, units="mean")
  assert [f.factor for f in plan.frames] == [4, 2, 1]
  g = lambda z: jnp.tanh(z)
  z = _x((4, 4, 2), batch=2, seed=1) * 3.0
  for frame in plan.frames:
    f = frame.factor
    np.testing.assert_allclose(adaptive.in_units(g, frame, "mean")(z),
                               f * np.tanh(np.asarray(z) / f), rtol=1e-6)
    assert adaptive.in_units(g, frame, "coefficients") is g
  # What "mean" divides by: a constant image of 1 has block means 1 and
  # coarse pixels f (to_coarse keeps coefficient values).
  ones = jnp.ones((1,) + SHAPE, jnp.float32)
  for grid, frame in zip(plan.grids, plan.frames):
    np.testing.assert_allclose(grid.to_coarse(ones), float(frame.factor),
                               rtol=1e-5)
  with pytest.raises(ValueError, match="coarse_units='pixels' is not one of "
                     r"\['coefficients', 'mean'\]"):
    adaptive.plan(path, units="pixels")


# Slow tier (two models compiled at three grids); the scale per grid and the
# config's path are fast tests below and above.
@pytest.mark.slow
def test_mean_units_apply_once_in_the_loss_and_the_sampler():
  """A "mean" run on a field equals a "coefficients" run on that field
  scaled inside the model (_InUnits): the loss and the sampler each apply
  the units exactly once, in the right direction."""
  path = _path("haar", blend="smoothstep")
  plan_m = adaptive.plan(path, units="mean")
  plan_c = adaptive.plan(path)
  field = _Squash(_BandField(path, plan_m))
  b = 12
  x1 = _x(batch=b, seed=3)
  keys = jax.random.split(jax.random.PRNGKey(7), b)
  setup = adaptive_loss.make_loss_setup(path)
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  loss = lambda m, p: jax.jit(adaptive_loss.sharded_loss_and_grad(
      m, p, setup, mesh, with_grad=False))({}, {"image": x1}, keys)
  (lm, am, _), (lc, ac, _) = loss(field, plan_m), loss(_InUnits(field),
                                                       plan_c)
  np.testing.assert_allclose(float(lm), float(lc), rtol=1e-6)
  np.testing.assert_allclose(am["band_loss_sum"], ac["band_loss_sum"],
                             rtol=1e-6)
  # ... and not the coefficient run on the field itself.
  l0 = loss(field, plan_c)[0]
  assert abs(float(l0) - float(lm)) > 1e-4 * abs(float(lm))  # float32: 1e-7
  spec = generate.parse_spec(config_lib.base().sample, 0, path.num_bands)
  spec = spec._replace(solver="heun", num_steps=6)

  def build(model, plan):
    return lambda params, y, frame: adaptive.in_units(
        lambda z, t: model.apply({}, z, t, frame=frame), frame, plan.units)
  x0 = _x(batch=3, seed=5)
  xm, _ = jax.jit(adaptive_sampler.make_sampler(build(field, plan_m), plan_m,
                                                spec))({}, x0, None)
  xc, _ = jax.jit(adaptive_sampler.make_sampler(
      build(_InUnits(field), plan_c), plan_c, spec))({}, x0, None)
  np.testing.assert_allclose(xm, xc, atol=1e-5)


def test_coarse_units_reach_the_run_and_are_refused_without_coarse_grids():
  run = experiment.setup(_digits(**{"arg": "transform=wavelet,runlocal",
                                    "model.coarse_units": "mean"}),
                         None, "tool")
  assert run.field.plan.units == "mean"
  assert run.field.record == {"scale_adaptive": True, "coarse_units": "mean"}
  with pytest.raises(ValueError, match="coarse_units='mean' sets the units "
                     ".*scale_adaptive=True"):
    experiment.setup(_digits(**{"arg": "transform=wavelet,runlocal",
                                "model.scale_adaptive": False,
                                "model.coarse_units": "mean"}), None,
                     "tool")


# ----------------------------------------------------------------------------
# Sub-batches and times.


def test_batch_sizes_round_by_largest_remainder():
  assert adaptive_loss.batch_sizes((0.5, 0.3, 0.2), 7) == (4, 2, 1)
  assert adaptive_loss.batch_sizes((1 / 3,) * 3, 16) == (6, 5, 5)
  # Every band with a share gets an example, taken from the largest.
  assert adaptive_loss.batch_sizes((0.96, 0.02, 0.02), 10) == (8, 1, 1)
  assert adaptive_loss.batch_sizes((0.5, 0.0, 0.5), 4) == (2, 0, 2)
  assert adaptive_loss.batch_sizes((0.5, 0.5), 6, explicit=(1, 5)) == (1, 5)
  with pytest.raises(ValueError, match="summing to the batch size 6"):
    adaptive_loss.batch_sizes((0.5, 0.5), 6, explicit=(1, 4))
  with pytest.raises(ValueError, match="positive share"):
    adaptive_loss.batch_sizes((0.5, 0.5), 6, explicit=(0, 6))
  with pytest.raises(ValueError, match="cannot hold one example"):
    adaptive_loss.batch_sizes((1 / 3,) * 3, 2)


@pytest.mark.parametrize("method,opts", [
    ("uniform", {}), ("band", {"band_weights": (3.0, 1.0, 1.0)}),
    ("logit_normal", {"logit_mean": 0.5, "logit_std": 1.2}),
    ("band_logit_normal", {"band_weights": (1.0, 2.0, 1.0),
                           "logit_mean": 0.3, "logit_std": 0.8})])
def test_band_times_follow_the_run_t_sampling_given_the_band(method, opts):
  path = paths.make_path(kamp.get("wavelet", SHAPE, wavelet="haar",
                                  levels=2), cutoffs=kamp.even_cutoffs(3),
                         tau=(0.0, 0.2, 0.7, 1.0))
  shares = adaptive_loss.band_shares(path, method, **opts)
  np.testing.assert_allclose(np.sum(shares), 1.0, atol=1e-12)
  n = 20000
  t_all = np.asarray(paths.sample_t(jax.random.PRNGKey(0), n, path, method,
                                    **opts))
  band = np.searchsorted(np.asarray(path.tau[1:-1]), t_all, side="right")
  np.testing.assert_allclose(np.bincount(band, minlength=3) / n, shares,
                             atol=0.015)
  for s in range(3):
    t = np.asarray(jax.vmap(lambda k: adaptive_loss.band_time(
        k, path, s, method, **opts))(jax.random.split(
            jax.random.PRNGKey(s + 1), 4000)))
    assert t.min() >= path.tau[s] and t.max() < path.tau[s + 1]
    # Same law as the run's t restricted to the band: compare quartiles.
    ref = t_all[band == s]
    np.testing.assert_allclose(np.quantile(t, [0.25, 0.5, 0.75]),
                               np.quantile(ref, [0.25, 0.5, 0.75]),
                               atol=0.02)


# ----------------------------------------------------------------------------
# Refusals and the command a user types.


def _digits(**overrides):
  from configs import digits  # pylint: disable=g-import-not-at-top
  arg = overrides.pop("arg", "transform=wavelet,runlocal")
  c = digits.get_config(arg)
  c.update_from_flattened_dict(dict({"model.scale_adaptive": True},
                                    **overrides))
  return c


def test_runs_that_cannot_be_scale_adaptive_are_refused_clearly():
  with pytest.raises(ValueError, match="'identity' has no lower-resolution "
                     "grid.*one band"):
    experiment.setup(_digits(arg="transform=identity,runlocal"), None,
                     "tool")
  # pca is refused before its basis is fitted on data.
  with pytest.raises(ValueError, match="'pca' has no lower-resolution grid"
                     ".*principal components"):
    experiment.setup(_digits(arg="transform=pca,runlocal"), None, "tool")
  # Even cut-offs (0, 0.5, 1) do not fit a 16x16 dct: the nearest that do.
  with pytest.raises(ValueError, match=r"cut-off 0\.5 .* does not fit.*"
                     r"Nearest cut-offs that fit: 0\.377124 \(bands 0\.\.0 "
                     r"on 8x8\)"):
    experiment.setup(_digits(arg="transform=dct,runlocal"), None, "tool")
  # ... and the one it names trains.
  run = experiment.setup(_digits(**{"arg": "transform=dct,runlocal",
                                    "path.num_scales": 2,
                                    "path.cutoffs": (0.0, 0.377124, 1.0)}),
                         None, "tool")
  assert [g.shape for g in run.field.plan.grids] == [(8, 8, 1), (16, 16, 1)]
  assert run.field.band_grids == ("8x8", "16x16")
  with pytest.raises(ValueError, match="overlap=0"):
    experiment.setup(_digits(**{"path.overlap": 0.2}), None, "tool")
  with pytest.raises(ValueError, match="band_batch_sizes .*"
                     "scale_adaptive=True"):
    experiment.setup(_digits(**{"model.scale_adaptive": False,
                                "loss.band_batch_sizes": (8, 8)}), None,
                     "tool")


def test_curriculum_phases_are_checked_and_picked_by_step():
  """config.loss.band_batch_phases: refused without scale-adaptive
  compute, in a wrong form or with sizes that do not fit the batch (the
  phase named); otherwise each step trains with its phase's split."""
  from kflow_jax.run import field as field_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="band_batch_phases is a curriculum"
                     ".*scale_adaptive=True"):
    experiment.setup(_digits(**{"model.scale_adaptive": False,
                                "loss.band_batch_phases": ((2, 8, 8),)}),
                     None, "tool")
  for bad in (((2, 8),), ((4, 8, 8), (2, 8, 8)), ((0, 8, 8),),
              ((2.5, 8, 8),)):
    with pytest.raises(ValueError, match="each phase must be"):
      experiment.setup(_digits(**{"loss.band_batch_phases": bad}), None,
                       "tool")
  with pytest.raises(ValueError, match=r"phase 1 \(the steps before 4\): "
                     r"sizes \(10, 8\) must be 2 ints"):
    experiment.setup(_digits(**{"loss.band_batch_phases":
                                ((2, 12, 4), (4, 10, 8))}), None, "tool")
  run = experiment.setup(_digits(**{"loss.band_batch_phases":
                                    ((2, 12, 4), (4, 10, 6))}), None, "tool")
  assert [end for end, _ in run.field.train_phases] == [2, 4]
  picked = [field_lib.loss_and_grad_at(run.field, s) for s in range(6)]
  assert [k for k, _ in picked] == [0, 0, 1, 1, 2, 2]
  assert picked[0][1] is run.field.train_phases[0][1]
  assert picked[5][1] is run.field.loss_and_grad


def test_allocation_rule_and_its_measurement(tmp_path):
  """adaptive_loss.allocation_shares: B_s ~ p_s rms_s / sqrt(c_s), refused
  without an error for a band that has a share; the tool's reading of the
  log: the root mean square over the last rows, a clear error without."""
  from kflow_jax.run import band_allocation  # pylint: disable=g-import-not-at-top
  got = adaptive_loss.allocation_shares((1 / 3, 1 / 3, 1 / 3), (1., 2., 1.),
                                        (1 / 16, 1 / 4, 1.))
  np.testing.assert_allclose(got, np.array([4., 4., 1.]) / 9, rtol=1e-12)
  # A band without a share of t gets no examples, whatever its error.
  np.testing.assert_allclose(adaptive_loss.allocation_shares(
      (0.5, 0.5, 0.0), (1., 1., np.nan), (0.25, 1., 1.)), [2 / 3, 1 / 3, 0])
  with pytest.raises(ValueError, match="finite rms"):
    adaptive_loss.allocation_shares((0.5, 0.5), (1., np.nan), (0.25, 1.))
  with pytest.raises(ValueError, match="one value per band"):
    adaptive_loss.allocation_shares((0.5, 0.5), (1.,), (0.25, 1.))
  with pytest.raises(ValueError, match="no band_loss_rms .*train the run"):
    band_allocation.measured_rms(str(tmp_path), 4)
  rows = [{"step": 2, "loss": 1.0},
          {"step": 4, "band_loss_rms": [1.0, 5.0]},
          {"step": 6, "band_loss_rms": [3.0, None]},
          {"step": 8, "band_loss_rms": [1.0, 1.0]}]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  steps, rms = band_allocation.measured_rms(str(tmp_path), 2)
  assert steps == [6, 8]
  np.testing.assert_allclose(rms[0], np.sqrt(5.0))
  assert np.isnan(rms[1])  # a band a row did not train: no value
  steps, rms = band_allocation.measured_rms(str(tmp_path), 1)
  np.testing.assert_allclose(rms, [1.0, 1.0])
  # The rule splits the batch of a scale-adaptive run only.
  run = experiment.setup(_digits(**{"model.scale_adaptive": False}), None,
                         "tool")
  with pytest.raises(ValueError, match="scale_adaptive=True"):
    band_allocation.allocation(run, str(tmp_path), 1, 16)
  run = experiment.setup(_digits(), None, "tool")
  out = band_allocation.allocation(run, str(tmp_path), 1, 16)
  # Equal errors and shares: the 8x8 band costs a quarter, so it gets
  # twice the examples (1 / sqrt(1/4)), and a step costs less.
  assert out["band_batch_sizes"] == [11, 5]
  assert out["own_band_batch_sizes"] == [8, 8]
  assert out["step_cost_vs_own"] == pytest.approx((11 / 4 + 5) / (8 / 4 + 8))


@pytest.mark.slow
def test_curriculum_through_the_command_logs_its_cost_and_resumes(tmp_path):
  """A coarse-to-fine curriculum through kflow_jax.main: the phase with
  most examples on the 8x8 grid logs fewer FLOPs per step, and a run
  resumed inside the first phase equals the uninterrupted one bit for
  bit after crossing into the next."""
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  flags = ("--config.total_steps=4", "--config.log_every_steps=1",
           "--config.checkpoint_every_steps=1",
           "--config.keep_checkpoints=4", "--config.sample.at_end=false",
           "--config.loss.band_batch_phases=((2, 14, 2),)")
  p = _main(*flags, workdir=a)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "curriculum phase 1" in p.stderr
  with open(os.path.join(a, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  cost = {r["step"]: r["flops_per_step"] for r in rows if "loss" in r}
  assert cost[1] == cost[2] < cost[3] == cost[4], cost
  # Each band's error spread is logged: its root mean square is at least
  # its mean.
  for r in rows:
    if "loss" in r:
      assert all(q >= m > 0 for q, m in zip(r["band_loss_rms"],
                                            r["band_loss"])), r
  # The allocation rule on this run's measured errors, through its tool.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  tool = [sys.executable, "-m", "kflow_jax.tools.band_allocation",
          "--config=configs/digits.py:transform=wavelet,runlocal",
          "--config.model.name=dit", f"--workdir={a}", "--rows=2",
          "--config.model.scale_adaptive=True", flags[-1]]
  p = subprocess.run(tool, cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  with open(os.path.join(a, "band_allocation.json")) as f:
    alloc = json.load(f)
  assert alloc["measured_steps"] == [3, 4]
  assert sum(alloc["band_batch_sizes"]) == 16
  assert p.stdout.strip().splitlines()[-1] == alloc["flag"]
  shutil.copytree(a, b)
  for step in ("2", "3", "4"):
    shutil.rmtree(os.path.join(b, "checkpoints", step))
  p = _main(*flags, workdir=b)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "Resuming from the checkpoint at step 1" in p.stderr
  from kflow_jax.infra import checkpointing  # pylint: disable=g-import-not-at-top
  leaves = []
  for wd in (a, b):
    ck = checkpointing.Checkpointer(wd, read_only=True)
    leaves.append(jax.tree.leaves(ck.manager.restore(4)["state"]["params"]))
    ck.close()
  for x, y in zip(*leaves):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _main(*args, workdir):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/digits.py:transform=wavelet,runlocal",
       f"--workdir={workdir}", "--config.model.name=dit",
       "--config.model.scale_adaptive=True", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_command_trains_resumes_samples_and_evaluates(tmp_path):
  wd = str(tmp_path / "run")
  p = _main("--config.total_steps=4", "--config.sample.at_end=false",
            workdir=wd)
  assert p.returncode == 0, p.stderr[-3000:]
  # Relaunched with more steps: resumes the same params (a run control key).
  p = _main("--config.total_steps=6", workdir=wd)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "Resuming from the checkpoint at step 4" in p.stderr
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert [m["step"] for m in lines if "loss" in m] == [2, 4, 6]
  assert all(np.isfinite(m["loss"]) and len(m["band_loss"]) == 2
             for m in lines if "loss" in m)
  assert os.path.exists(os.path.join(wd, "band_strip.png"))
  p = _main("--mode=sample", workdir=wd)
  assert p.returncode == 0, p.stderr[-3000:]
  (tag,) = os.listdir(os.path.join(wd, "sample_mode"))
  assert tag.endswith("_adaptive")
  with open(os.path.join(wd, "sample_mode", tag, "samples.json")) as f:
    meta = json.load(f)
  assert meta["complete"] and meta["scale_adaptive"]
  # runlocal: 4 Euler steps, 2 per band, band 0 on 8x8 of 16x16.
  assert meta["nfe_per_band_mean"] == [2.0, 2.0]
  assert meta["nfe_full_equivalent_mean"] == 2.5
  assert meta["band_grids"] == ["8x8", "16x16"]
  # --mode=eval: the per-band loss on the eval split, in-process.
  run = experiment.setup(_digits(), wd, "eval")
  from kflow_jax.evaluators import evaluate  # pylint: disable=g-import-not-at-top
  _, state, _ = experiment.restore(run)
  out = evaluate.eval_loss(run, state.params, 6, write=False)
  assert np.isfinite(out["eval_loss"]) and out["eval_examples"] > 0
  assert len(out["eval_band_loss"]) == 2


def test_command_error_for_a_transform_without_coarse_grid(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/digits.py:transform=identity,runlocal",
       f"--workdir={tmp_path}", "--config.model.scale_adaptive=True"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 1
  assert "kflow_jax: error: transform 'identity' has no lower-resolution " \
         "grid" in p.stderr
  assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_cost_benchmark_runs():
  """benchmarks/adaptive_cost.py at toy size: its XLA-counted sampling
  ratio is the DiT's matmul estimate, and training saves about as much;
  plain flow matching costs what full-resolution K-Flow costs, and the
  whole sampler runs count every step (NFE x one call)."""
  from benchmarks import adaptive_cost  # pylint: disable=g-import-not-at-top
  (row,) = adaptive_cost.main(["--quick", "--bands=2", "--time"])
  assert row["grids"] == ["16x16", "32x32"] and row["sub_batches"] == [6, 6]
  np.testing.assert_allclose(row["sample_ratio"], row["estimate_ratio"],
                             rtol=0.01)
  assert 1.4 < row["train_ratio"] < row["estimate_ratio"] + 0.05
  # Same network, batch and steps: FM and full K-Flow differ by the
  # transforms only (the path's, and band I/O's around every network call,
  # configs/digits.py: about 9 % of this toy DiT's step).
  assert row["train_gflops_fm"] < row["train_gflops_full"]
  np.testing.assert_allclose(row["train_gflops_fm"], row["train_gflops_full"],
                             rtol=0.15)
  assert 1.4 < row["step_flops_ratio_fm"] < row["estimate_ratio"] + 0.05
  assert row["nfe"] == 4 and row["nfe_per_band"] == [2, 2]
  assert row["nfe_full_equivalent"] == 2.5
  # Unrolled count: NFE calls of the network at the sample batch (within
  # the transforms' and the update's share).
  per_example = np.asarray(row["forward_gflops_per_grid"]) / row["batch"]
  want = row["sample_batch"] * 2 * per_example
  np.testing.assert_allclose(row["sample_gflops_fm"], 2 * want[-1],
                             rtol=0.05)
  np.testing.assert_allclose(row["sample_gflops_adaptive"], np.sum(want),
                             rtol=0.15)
  assert row["sample_flops_ratio_full"] > 1.4
  for arm in adaptive_cost.ARMS:
    assert row[f"train_s_{arm}"] > 0 and row[f"sample_s_{arm}"] > 0
  assert row["train_time_ratio_fm"] > 0 and row["sample_time_ratio_full"] > 0


def test_runs_from_before_the_switch_resume_and_keep_their_hash():
  """A config.json without model.scale_adaptive (or loss.band_batch_sizes)
  ran with the defaults: relaunching it is the same run, and its sample
  sets keep their config hash; switching on is a change."""
  from kflow_jax.infra import checkpointing  # pylint: disable=g-import-not-at-top
  new = _digits(**{"model.scale_adaptive": False})
  old = json.loads(new.to_json_best_effort(sort_keys=True))
  del old["model"]["scale_adaptive"], old["loss"]["band_batch_sizes"]
  assert checkpointing.config_diff(old, json.loads(
      new.to_json_best_effort())) == []
  stripped = _digits(**{"model.scale_adaptive": False})
  with stripped.unlocked():
    del stripped.model["scale_adaptive"], stripped.loss["band_batch_sizes"]
  assert checkpointing.config_hash(stripped) == checkpointing.config_hash(new)
  on = json.loads(_digits().to_json_best_effort())
  assert checkpointing.config_diff(old, on) == [
      "model.scale_adaptive: False -> True"]
  assert checkpointing.config_hash(_digits()) != checkpointing.config_hash(
      new)


def test_cost_benchmark_prices_a_chosen_split():
  """--band_batch_sizes reaches the scale-adaptive arm's config only (the
  split experiments/half_cost.py's measured-error arms train with)."""
  from benchmarks import adaptive_cost  # pylint: disable=g-import-not-at-top
  kw = dict(size="ti", batch=None, sample_steps=4, sample_batch=None)
  ad = adaptive_cost.arm_config("mnist", "adaptive", 3,
                                band_batch_sizes=[43, 8, 13], **kw)
  assert tuple(ad.loss.band_batch_sizes) == (43, 8, 13)
  for arm in ("fm", "full"):
    c = adaptive_cost.arm_config("mnist", arm, 3,
                                 band_batch_sizes=[43, 8, 13], **kw)
    assert c.loss.band_batch_sizes is None, arm
  assert adaptive_cost.arm_config("mnist", "adaptive", 3,
                                  **kw).loss.band_batch_sizes is None
