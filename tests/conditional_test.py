"""Class-conditional K-Flow end to end: train the digits CFG config, then
sample with CFG, class drop, band guidance and shared fine-band noise
through --mode=sample (sample_set.sample) and the command line.

The sampler checks compare against velocities built here from the model
directly, so they fail if an option is ignored or misapplied.
"""
import glob
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import digits
from kflow_jax.run import experiment
from kflow_jax.run import field as field_lib
from kflow_jax import generate
from kflow_jax.flow import sampling
from kflow_jax.generate import sample_set
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.modes import train
from kflow_jax.run import train_state
from kflow_jax.generate import files as samples_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, BS, K = 20, 10, 10  # runlocal: 20 samples in 2 batches, 10 classes


# At the config's lr, six steps leave adaLN-Zero's label path so near zero
# that CFG changes samples by ~1e-5; at 3e-2 by ~1e-2, so the checks can
# tell the options apart. Every call uses it: the workdir's config must
# match for --mode=sample.
LR = 3e-2


def _cfg(arg="cond,runlocal", **overrides):
  c = digits.get_config(arg)
  c.optim.learning_rate = LR
  c.checkpoint_every_steps = 0  # the final checkpoint only: faster
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A trained runlocal CFG run: (workdir, experiment, label-sensitive
  params for the sampler checks)."""
  wd = str(tmp_path_factory.mktemp("cfg_run"))
  state = train.train_and_evaluate(_cfg(), wd, devices=jax.devices()[:1])
  exp = experiment.setup(_cfg(), wd, "sample")
  params = train_state.ema_by_decay(state, (0.9,))
  # The direct sampler checks get a fixed random perturbation on top, so
  # v_c, v_u and their mixes differ by a wide margin over float round-off.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  params = jax.tree.unflatten(tree, [
      np.asarray(p) + 0.1 * np.asarray(jax.random.normal(k, p.shape))
      for p, k in zip(leaves, keys)])
  return wd, exp, params


def _read_set(wd, tag_part):
  """(arrays, grid png) of the one sample set whose tag ends in tag_part."""
  sets = [d for d in glob.glob(os.path.join(wd, "sample_mode", "*"))
          if os.path.basename(d).endswith(tag_part)]
  assert len(sets) == 1, (tag_part, os.listdir(os.path.join(wd,
                                                            "sample_mode")))
  return sample_set.load_samples(sets[0]), os.path.join(sets[0], "grid.png")


def _check_class_grid(png, images, labels):
  """Every sample sits in the PNG at row = its label."""
  scale = 64 // images.shape[1]
  grid = np.asarray(Image.open(png))
  h = images.shape[1]
  ncol = int(np.bincount(labels, minlength=K).max())
  assert grid.shape == (scale * (K * (h + 1) + 1),
                        scale * (ncol * (h + 1) + 1)), grid.shape
  tiles = np.asarray(images)[..., 0]
  seen = np.zeros(K, int)
  for i, y in enumerate(labels):
    r, c = int(y), seen[y]
    seen[y] += 1
    y0, x0 = scale * (1 + r * (h + 1)), scale * (1 + c * (h + 1))
    np.testing.assert_array_equal(grid[y0:y0 + scale * h:scale,
                                       x0:x0 + scale * h:scale], tiles[i])


@pytest.mark.slow
def test_training_writes_class_row_grid(run):
  wd, exp, _ = run
  assert exp.num_classes == K
  assert os.path.exists(os.path.join(wd, "band_strip.png"))
  grid = np.asarray(Image.open(os.path.join(wd, "samples.png")))
  # 20 samples, labels 0..9 twice: 10 rows of 2 tiles of 16 px (x4).
  assert grid.shape == (4 * (K * 17 + 1), 4 * (2 * 17 + 1)), grid.shape


VARIANTS = {
    # name: (config.sample overrides, file name suffix of --mode=sample)
    "plain": ({"guidance": 1.0}, "_euler_4"),
    "cfg": ({}, "_cfg1.5"),                       # (a) the config: CFG 1.5
    "drop": ({"class_drop_t": 0.3}, "_cfg1.5_drop0.3"),           # (b)
    "band0": ({"guidance_bands": (0,)}, "_cfg1.5_gbands0"),        # (c)
    "shared": ({"shared_bands": (1,)}, "_cfg1.5_shared1"),         # (d)
    "shared_all": ({"shared_bands": (0, 1)}, "_cfg1.5_shared0-1"),
    # Band projection: its own set beside the unprojected one.
    "project": ({"project": True}, "_cfg1.5_project"),
}


@pytest.fixture(scope="module")
def sampled(run):
  """--mode=sample (train.sample) of every variant on the trained run."""
  wd = run[0]
  return {name: _sample_mode(_cfg(**{f"sample.{k}": v
                                      for k, v in over.items()}), wd)
          for name, (over, _) in VARIANTS.items()}


def _sample_mode(config, wd):
  """--mode=sample in process: the set's uint8 images in index order."""
  r = experiment.setup(config, wd, "sample")
  step, state, _ = experiment.restore(r)
  d = sample_set.sample(r, experiment.inference_params(r, state), step)
  return sample_set.load_samples(d)["images"]


def _sampler(exp, spec):
  """The run's sampler for `spec`, its network without band I/O (the
  digits default hides and projects bands), so that the references below
  are written with the bare network."""
  c = _cfg(**{"path.hide_input": False, "path.project_output": False})
  return field_lib.build(c, exp.path, exp.model, exp.mesh, K,
                         scale_adaptive=False).sampler(spec)


def _spec(exp, config):
  return generate.parse_spec(config.sample, exp.num_classes,
                             exp.path.num_bands)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_sample_mode_outputs(run, sampled, name):
  images = sampled[name]
  assert images.shape == (N, 16, 16, 1) and np.all(np.isfinite(images))
  assert images.dtype == np.uint8
  data, png = _read_set(run[0], VARIANTS[name][1])
  np.testing.assert_array_equal(data["images"], images)
  np.testing.assert_array_equal(data["indices"], np.arange(N))
  labels = data["labels"]
  np.testing.assert_array_equal(labels, np.arange(N) % K)
  _check_class_grid(png, images, labels)


@pytest.mark.slow
def test_variants_differ_and_shared_noise_spans_batches(sampled):
  names = ["plain", "cfg", "drop", "band0", "shared"]
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert _diff(sampled[a], sampled[b]) > 0, (a, b)
  # All bands shared: samples i and i + 10 (same class, other batch) start
  # from the same noise, so they are the same sample.
  both = sampled["shared_all"]
  assert _diff(both[:BS], both[BS:]) <= 1  # uint8 rounding at most
  assert _diff(both[:BS], sampled["cfg"][:BS]) > 1


def _diff(a, b):
  return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


@pytest.mark.slow
def test_shared_band_noise_across_the_set(run):
  _, exp, _ = run
  spec = _spec(exp, _cfg(**{"sample.shared_bands": (1,)}))
  rng = jax.random.PRNGKey(0)
  x = sampler_lib.initial_noise(exp.path, exp.info.shape, spec, rng,
                             jnp.arange(6))
  c = exp.transform.forward(x)
  band = np.broadcast_to(exp.path.band, c.shape[1:])
  fine, coarse = np.asarray(c)[:, band == 1], np.asarray(c)[:, band == 0]
  np.testing.assert_allclose(fine, np.broadcast_to(fine[:1], fine.shape),
                             atol=1e-5)
  assert np.abs(coarse[1:] - coarse[:1]).min() > 0
  # Sample i's own noise comes from fold_in(rng, i), whatever the chunk.
  plain = sampler_lib.initial_noise(exp.path, exp.info.shape,
                                 _spec(exp, _cfg()), rng, jnp.arange(4, 7))
  np.testing.assert_array_equal(
      plain[1], jax.random.normal(jax.random.fold_in(rng, 5), (16, 16, 1)))


def _sample(run, y, **sample_overrides):
  _, exp, params = run
  spec = _spec(exp, _cfg(**{f"sample.{k}": v
                             for k, v in sample_overrides.items()}))
  x0 = jax.random.normal(jax.random.PRNGKey(7), (len(y), 16, 16, 1))
  sampler = _sampler(exp, spec)
  return np.asarray(sampler(params, x0, y)[0]), x0


def _reference(run, x0, velocity_fn, extra_times=()):
  _, exp, _ = run
  return np.asarray(sampling.sample(velocity_fn, exp.path, x0,
                                    solver="euler", num_steps=4,
                                    extra_times=extra_times))


def _model(run):
  _, exp, params = run
  return lambda x, t, y: exp.model.apply({"params": params}, x, t, y,
                                         train=False)


@pytest.mark.slow
def test_sampler_matches_reference_velocities(run):
  exp = run[1]
  f = _model(run)
  y = jnp.arange(4, dtype=jnp.int32) * 3 % K
  null = jnp.full_like(y, K)
  band = lambda t: np.asarray(exp.path.tau)[1] <= t  # True from band 1 on

  def mix(t, w, x, yy=y):
    v_c, v_u = f(x, t, yy), f(x, t, null)
    return v_u + w.reshape(-1, 1, 1, 1) * (v_c - v_u)

  cond, x0 = _sample(run, y, guidance=1.0)
  uncond = _reference(run, x0, lambda x, t: f(x, t, null))
  np.testing.assert_array_equal(cond, _reference(
      run, x0, lambda x, t: f(x, t, y)))
  assert np.abs(cond - uncond).max() > 1e-3
  # (a) CFG 1.5.
  cfg, _ = _sample(run, y, guidance=1.5)
  np.testing.assert_allclose(cfg, _reference(
      run, x0, lambda x, t: mix(t, jnp.full(t.shape, 1.5), x)), atol=1e-5)
  assert np.abs(cfg - cond).max() > 1e-3
  # (b) Class drop: t_drop = 0 is unconditional, 1 is plain CFG, 0.3 is
  # the label before 0.3 and the null label after.
  drop0, _ = _sample(run, y, guidance=1.5, class_drop_t=0.0)
  np.testing.assert_allclose(drop0, uncond, atol=1e-5)
  drop1, _ = _sample(run, y, guidance=1.5, class_drop_t=1.0)
  np.testing.assert_allclose(drop1, cfg, atol=1e-5)
  drop, _ = _sample(run, y, guidance=1.0, class_drop_t=0.3)
  ref = _reference(run, x0, lambda x, t: f(x, t, jnp.where(t < 0.3, y, null)),
                   extra_times=[0.3])
  np.testing.assert_allclose(drop, ref, atol=1e-5)
  assert min(np.abs(drop - cond).max(), np.abs(drop - uncond).max()) > 1e-3
  drop_cfg, _ = _sample(run, y, guidance=1.5, class_drop_t=0.3)
  np.testing.assert_allclose(drop_cfg, _reference(
      run, x0, lambda x, t: mix(t, jnp.where(t < 0.3, 1.5, 0.0), x),
      extra_times=[0.3]), atol=1e-5)
  # (c) Guidance only in band 0 (plain conditional after tau_1), alone
  # and with class drop.
  gb, _ = _sample(run, y, guidance=1.5, guidance_bands=(0,))
  np.testing.assert_allclose(gb, _reference(
      run, x0, lambda x, t: mix(t, jnp.where(band(t), 1.0, 1.5), x)),
                             atol=1e-5)
  assert min(np.abs(gb - cfg).max(), np.abs(gb - cond).max()) > 1e-3
  gb1, _ = _sample(run, y, guidance=1.0, guidance_bands=(0,))
  np.testing.assert_allclose(gb1, cond, atol=1e-5)
  both, _ = _sample(run, y, guidance=1.5, guidance_bands=(1,),
                    class_drop_t=0.75)
  np.testing.assert_allclose(both, _reference(
      run, x0, lambda x, t: mix(t, jnp.where(
          t < 0.75, jnp.where(band(t), 1.5, 1.0), 0.0), x),
      extra_times=[0.75]), atol=1e-5)


@pytest.mark.slow
def test_band_strip_with_class_drop_inside_a_band(run):
  _, exp, params = run
  spec = _spec(exp, _cfg(**{"sample.class_drop_t": 0.3}))
  sampler = _sampler(exp, spec)
  x0 = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 1))
  y = jnp.asarray([1, 2], jnp.int32)
  # 2 steps over 2 bands: band 0 needs 2 (0..0.3, 0.3..0.5).
  states = sampler_lib.band_strip_states(exp.path, sampler, params, x0, y,
                                      spec._replace(num_steps=2))
  assert states.shape == (3, 2, 16, 16, 1)
  assert np.all(np.isfinite(np.asarray(states)))


def test_bad_steering_options_are_clear_errors():
  # The run's experiment, untrained: the fast tier skips the `run` fixture.
  exp = experiment.setup(_cfg(), None, "tool")
  for key, value in (("guidance", 1.5), ("class_drop_t", 0.3),
                     ("guidance_bands", (0,))):
    with pytest.raises(ValueError, match="class-conditional"):
      generate.parse_spec(_cfg("runlocal", **{
          f"sample.{key}": value}).sample, 0, 2)
  with pytest.raises(ValueError, match="class_drop_t"):
    _spec(exp, _cfg(**{"sample.class_drop_t": 1.5}))
  for key in ("guidance_bands", "shared_bands"):
    with pytest.raises(ValueError, match="the path has 2 band"):
      _spec(exp, _cfg(**{f"sample.{key}": (2,)}))
  with pytest.raises(ValueError, match="labels must lie"):
    samples_lib.class_grid(np.zeros((2, 4, 4, 1)), np.array([0, 10]), 10)


@pytest.mark.slow
def test_command_line_class_drop_and_band_guidance(run, tmp_path):
  wd = run[0]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/digits.py:cond,runlocal", f"--workdir={wd}",
       "--mode=sample", f"--config.optim.learning_rate={LR}",
       "--config.sample.class_drop_t=0.3",
       "--config.sample.guidance_bands=(0,)"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  data, png = _read_set(wd, "_cfg1.5_gbands0_drop0.3")
  assert data["images"].shape == (N, 16, 16, 1)
  assert np.all(np.isfinite(data["images"]))
  _check_class_grid(png, data["images"], data["labels"])
