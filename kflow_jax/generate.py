"""Generation: the sampling spec, the sampler it builds, and its outputs.

`config.sample` is read here once, by `parse_spec`, into a `Spec` that is
checked against the run (class-conditional or not, number of bands);
everything else (the training loop's sample grids, `--mode=sample`, the
benchmarks) reads the spec. The sampler integrates the K-Flow ODE with the
spec's solver and steering (docs/method.md#sampling, #guidance, #steering):

  v = v_u + w(t) (v_c - v_u)
  w = guidance (1: plain conditional), per band with guidance_bands, and 0
  from class_drop_t on (the null label only).
"""
import os
from typing import Callable, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import numpy as np

from kflow_jax import sampling
from kflow_jax import steering
from kflow_jax.evaluators import samples as samples_lib


def default_config() -> ml_collections.ConfigDict:
  """Every config.sample key with its default."""
  return ml_collections.ConfigDict(dict(
      # How many samples --mode=sample writes, in batches of batch_size; the
      # training loop's grids use the same count.
      num_samples=64, batch_size=64,
      # Solver (sampling.SOLVERS): fixed-step ones take num_steps (split
      # over the bands by their time share), adaptive ones rtol / atol.
      solver="euler", num_steps=40, rtol=1e-5, atol=1e-5,
      project=False,            # band projection of the velocity
      guidance=1.0,             # classifier-free guidance scale w
      guidance_bands=(),        # CFG only in these bands (plain elsewhere)
      class_drop_t=-1.0,        # label only while t < it; -1 = off
      shared_bands=(),          # noise of these bands shared by all samples
      use_ema=True, ema_decay=config_dict.placeholder(float),  # None: first
      seed=1,
      at_end=True))             # samples.png and band_strip.png at the end


class Spec(NamedTuple):
  """A checked config.sample (see default_config for the meaning)."""
  num_samples: int
  batch_size: int
  solver: str
  num_steps: int
  rtol: float
  atol: float
  project: bool
  guidance: float
  guidance_bands: tuple
  class_drop_t: Optional[float]   # None: no class drop
  shared_bands: tuple
  use_ema: bool
  ema_decay: Optional[float]
  seed: int
  at_end: bool

  @property
  def extra_times(self) -> tuple:
    """Times besides the band edges where the sampling field switches."""
    return () if self.class_drop_t is None else (self.class_drop_t,)


def parse_spec(scfg, num_classes: int, num_bands: int) -> Spec:
  """Checks config.sample against the run and returns its Spec."""
  sampling.SOLVERS.get(scfg.solver)
  guidance = float(scfg.guidance)
  bands = tuple(int(b) for b in (scfg.get("guidance_bands", ()) or ()))
  shared = tuple(int(b) for b in (scfg.get("shared_bands", ()) or ()))
  t_drop = float(scfg.get("class_drop_t", -1.0))
  if not num_classes:
    # Without labels these options would be silently ignored.
    used = [k for k, on in (("guidance", guidance != 1.0),
                            ("guidance_bands", bool(bands)),
                            ("class_drop_t", t_drop >= 0)) if on]
    if used:
      raise ValueError(
          f"config.sample.{', '.join(used)} need a class-conditional model "
          "(config.conditional=True, trained with config.label_dropout > 0 "
          "for guidance); reset them (guidance=1.0, guidance_bands=(), "
          "class_drop_t=-1) for an unconditional config.")
  if t_drop > 1.0:
    raise ValueError(f"config.sample.class_drop_t={t_drop} must lie in "
                     "[0, 1], or be negative (-1) for no class drop.")
  for key, chosen in (("guidance_bands", bands), ("shared_bands", shared)):
    bad = [b for b in chosen if not 0 <= b < num_bands]
    if bad:
      raise ValueError(
          f"config.sample.{key}={chosen} names band(s) {bad}, but the path "
          f"has {num_bands} band(s), numbered 0..{num_bands - 1}.")
  n, bs = int(scfg.num_samples), int(scfg.batch_size)
  if n < 1 or bs < 1:
    raise ValueError(f"config.sample.num_samples ({n}) and batch_size ({bs}) "
                     "must be >= 1.")
  if int(scfg.num_steps) < 1:
    raise ValueError(f"config.sample.num_steps must be >= 1, got "
                     f"{scfg.num_steps}.")
  return Spec(
      num_samples=n, batch_size=bs, solver=str(scfg.solver),
      num_steps=int(scfg.num_steps), rtol=float(scfg.get("rtol", 1e-5)),
      atol=float(scfg.get("atol", 1e-5)), project=bool(scfg.project),
      guidance=guidance, guidance_bands=bands,
      class_drop_t=t_drop if t_drop >= 0 else None, shared_bands=shared,
      use_ema=bool(scfg.use_ema),
      ema_decay=None if scfg.ema_decay is None else float(scfg.ema_decay),
      seed=int(scfg.seed), at_end=bool(scfg.at_end))


def velocity_fn(model, params, path, num_classes: int, spec: Spec,
                y) -> Callable:
  """(x, t) -> v of the spec's guidance and class drop for labels y."""
  def apply(x, t, yy):
    return model.apply({"params": params}, x, t, yy, train=False)

  if not num_classes:
    return lambda x, t: apply(x, t, None)
  guidance = spec.guidance
  if spec.guidance_bands:
    # Guidance only in the chosen bands, plain conditional elsewhere.
    guidance = steering.band_guidance(path, guidance, spec.guidance_bands)
  t_drop = spec.class_drop_t
  if t_drop is not None and np.ndim(guidance) == 0:
    return steering.class_drop_velocity(apply, path, y,
                                        num_classes=num_classes,
                                        t_drop=t_drop, guidance=guidance)
  if t_drop is not None:
    # Per-band guidance while the label is kept, the null label after.
    def w(t):
      return jnp.where(t < t_drop,
                       sampling.guidance_weights(path, guidance, t), 0.0)
    return sampling.cfg_velocity(apply, path, y, num_classes=num_classes,
                                 guidance=w)
  return sampling.cfg_velocity(apply, path, y, num_classes=num_classes,
                               guidance=guidance)


def make_sampler(model, path, num_classes: int, spec: Spec) -> Callable:
  """fn(params, x0, y, t_start=0, t_end=1, num_steps=None) -> (x, stats).

  stats["nfe"] counts network evaluations (a CFG call of 2B counts once,
  as the batch is evaluated in one call). Jit it with static t_start,
  t_end, num_steps.
  """
  def run(params, x0, y, t_start=0.0, t_end=1.0, num_steps=None):
    vfn = velocity_fn(model, params, path, num_classes, spec, y)
    kwargs = {}
    if sampling.is_adaptive(spec.solver):
      kwargs = dict(rtol=spec.rtol, atol=spec.atol)
    else:
      kwargs = dict(num_steps=int(num_steps or spec.num_steps),
                    return_stats=True)
    return sampling.sample(vfn, path, x0, solver=spec.solver,
                           project=spec.project, t_start=t_start,
                           t_end=t_end, extra_times=spec.extra_times,
                           **kwargs)
  return run


def jit_sampler(sampler) -> Callable:
  return jax.jit(sampler, static_argnames=("t_start", "t_end", "num_steps"))


def sample_labels(num_classes: int, start: int, count: int) -> jax.Array:
  """Labels of samples start..start+count-1: 0..K-1 repeated (sample i has
  class i % K), so any run of K samples holds every class once and the
  class-row grid has one column per repeat. Zeros for unconditional models
  (which ignore them)."""
  return (jnp.arange(start, start + count, dtype=jnp.int32)
          % max(int(num_classes), 1))


def initial_noise(path, shape, spec: Spec, rng, batch: int,
                  batch_index: Optional[int] = None):
  """x0 for sampling; spec.shared_bands shares those bands' noise across
  the samples (the paper's fix-some-bands steering experiment).

  batch_index: for a sample set drawn in several batches: the noise of
  batch i is drawn from fold_in(rng, i), except the shared bands, which
  come from rng itself, so they are shared by every batch, not only
  within one.
  """
  shared = spec.shared_bands
  key = rng if batch_index is None else jax.random.fold_in(rng, batch_index)
  full = (batch,) + tuple(shape)
  if not shared:
    return jax.random.normal(key, full, jnp.float32)
  if batch_index is None:
    return steering.shared_band_noise(rng, path, batch, shared)
  ref = steering.shared_band_noise(rng, path, 1, shared)
  sources = [0 if s in shared else 1 for s in range(path.num_bands)]
  return steering.mix_noise(path,
                            [ref, jax.random.normal(key, full, jnp.float32)],
                            sources)


def band_strip_states(path, sampler, params, x0, y, spec: Spec):
  """States at every band boundary tau_0..tau_S, integrating band by band
  with the same solver: [S+1, B, H, W, C] (index 0 is the noise)."""
  tau = [float(v) for v in path.tau]
  states = [x0]
  x = x0
  for a, b in zip(tau[:-1], tau[1:]):
    # The band's share of the step budget, at least one step per segment
    # between switch times (window edges with overlap, a class-drop time).
    segments = 1 + len(sampling.switch_times(path, a, b, spec.extra_times))
    n = max(segments, round(spec.num_steps * (b - a)))
    x, _ = sampler(params, x, y, t_start=a, t_end=b, num_steps=n)
    states.append(x)
  return jnp.stack(states)


def sample_tag(spec: Spec, step: int) -> str:
  """File name stem of --mode=sample outputs: step, solver, steps and any
  guidance / steering option, so that the runs of one experiment (e.g.
  with and without class drop) do not overwrite each other."""
  steps = (f"tol{spec.rtol:g}" if sampling.is_adaptive(spec.solver)
           else str(spec.num_steps))
  tag = f"step_{step:08d}_{spec.solver}_{steps}"
  join = lambda v: "-".join(str(int(b)) for b in v)
  if spec.guidance != 1.0:
    tag += f"_cfg{spec.guidance:g}"
  if spec.guidance_bands:
    tag += f"_gbands{join(spec.guidance_bands)}"
  if spec.class_drop_t is not None:
    tag += f"_drop{spec.class_drop_t:g}"
  if spec.shared_bands:
    tag += f"_shared{join(spec.shared_bands)}"
  return tag


def grid_layout(num_classes: int, labels) -> dict:
  """save_grid keywords: one class per row for class-conditional runs."""
  if not num_classes:
    return {}
  return {"labels": np.asarray(labels), "num_classes": int(num_classes)}


def decode(decoder, x) -> np.ndarray:
  """Latents -> images with the VAE (latent configs); pixels unchanged."""
  x = x if decoder is None else decoder(x)
  return np.asarray(jax.device_get(x))


def write_grid(run, sampler, params, step: int, writer=None,
               final: bool = False):
  """The training loop's sample grid (and, at the end, the band strip)."""
  spec, path = run.spec, run.path
  n = spec.num_samples
  rng = jax.random.PRNGKey(spec.seed)
  x0 = initial_noise(path, run.info.shape, spec, rng, n)
  y = sample_labels(run.num_classes, 0, n)
  x = decode(run.decoder, sampler(params, x0, y)[0])
  if jax.process_index() != 0:
    return
  name = "samples.png" if final else os.path.join(
      "samples", f"step_{step:08d}.png")
  layout = grid_layout(run.num_classes, y)
  samples_lib.save_grid(os.path.join(run.workdir, name), x, **layout)
  if writer is not None:
    writer.write_image(step, "samples", (
        samples_lib.class_grid(x, **layout) if layout else
        samples_lib.grid(x)))
  if final:
    k = min(4, n)
    states = band_strip_states(path, sampler, params, x0[:k], y[:k], spec)
    states = np.stack([decode(run.decoder, s) for s in states])
    samples_lib.save_band_strip(
        os.path.join(run.workdir, "band_strip.png"),
        [states[:, i] for i in range(k)], path.tau)
  logging.info("Wrote samples for step %d to %s", step, run.workdir)


def sample(run, params, step: int) -> np.ndarray:
  """--mode=sample: spec.num_samples samples as PNG and .npz in
  <workdir>/sample_mode/<tag>.{png,npz}; returns the images."""
  spec = run.spec
  sampler = jit_sampler(make_sampler(run.model, run.path, run.num_classes,
                                     spec))
  n, bs = spec.num_samples, spec.batch_size
  rng = jax.random.PRNGKey(spec.seed)
  out, labels, latents, nfe = [], [], [], []
  for i in range(0, n, bs):
    m = min(bs, n - i)
    # Shared bands (steering) come from rng itself: shared by all batches.
    x0 = initial_noise(run.path, run.info.shape, spec, rng, m,
                       batch_index=i // bs)
    y = sample_labels(run.num_classes, i, m)
    x, stats = sampler(params, x0, y)
    nfe.append(int(stats["nfe"]))
    if run.decoder is not None:
      latents.append(np.asarray(jax.device_get(x)))
    out.append(decode(run.decoder, x))
    labels.append(np.asarray(y))
  images, labels = np.concatenate(out), np.concatenate(labels)
  extra = {"latents": np.concatenate(latents)} if latents else {}
  if run.num_classes:
    # Class i % K for sample i; unconditional runs have no labels to store.
    extra["labels"] = labels
  outdir = os.path.join(run.workdir, "sample_mode")
  if jax.process_index() == 0:
    tag = sample_tag(spec, step)
    samples_lib.save_npz(os.path.join(outdir, tag + ".npz"), images, **extra)
    samples_lib.save_grid(os.path.join(outdir, tag + ".png"), images[:256],
                          **grid_layout(run.num_classes, labels[:256]))
    logging.info("Wrote %d samples of step %d to %s/%s.{png,npz} (solver "
                 "%s, NFE per batch: mean %.1f, max %d)", n, step, outdir,
                 tag, spec.solver, float(np.mean(nfe)), max(nfe))
  return images
