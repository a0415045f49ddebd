"""The full-resolution sampler and what every sampler shares.

The sampling field of a network (docs/method.md#sampling, #guidance):

  v = v_u + w(t) (v_c - v_u)
  w = guidance (1: plain conditional), per band with guidance_bands, and 0
  from class_drop_t on (the null label only).

`guided_velocity` builds it from any network apply(x, t, y) (the run's
Field gives the network as the run trains it, run/field.py), and
`make_sampler` integrates it with the spec's solver at full resolution
(the scale-adaptive sampler is flow/adaptive_sampler.py). The noise and
labels of sample index i (`initial_noise`, `sample_labels`) do not depend
on how a set is split into chunks, devices or hosts; `write_grid` is the
training loop's sample grid and band strip.
"""
import os
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import generate
from kflow_jax.flow import guidance as guidance_lib
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import label_baselines
from kflow_jax.flow import sampling
from kflow_jax.flow import slots as slots_lib
from kflow_jax.flow import token_slots
from kflow_jax.flow import steering
from kflow_jax.generate import files as samples_lib


def guided_velocity(apply: Callable, path: paths_lib.Path, num_classes: int,
                    spec: generate.Spec, y, slots=None) -> Callable:
  """(x, t) -> v of the spec's guidance and class drop for labels y, from
  the network apply(x, t, y) -> v (any grid: guidance reads t only).
  slots: the run's condition slots (flow/slots.py), None without: then
  y [B] or [B, K] and guidance per band and slot."""
  if not num_classes:
    return lambda x, t: apply(x, t, None)
  if slots is not None:
    matrix = slots_lib.guidance_matrix(slots, spec.guidance_matrix,
                                       spec.guidance, spec.guidance_bands)
    return slots_lib.guided_velocity(apply, path, slots, y, matrix,
                                     spec.guidance_mode, spec.class_drop_t)
  guidance = spec.guidance
  if spec.guidance_matrix:
    # One column: a guidance weight per band (generate.parse_spec).
    guidance = tuple(float(r[0]) for r in spec.guidance_matrix)
  if spec.label_switch_t:
    return label_baselines.switched_velocity(
        apply, path, y, spec.label_switch_t, num_classes=num_classes,
        guidance=guidance)
  if spec.factorized_cutoffs:
    split = paths_lib.make_path(path.transform,
                                cutoffs=spec.factorized_cutoffs)
    return label_baselines.factorized_velocity(
        apply, path, split, y, num_classes=num_classes, guidance=guidance)
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
                       guidance_lib.guidance_weights(path, guidance, t), 0.0)
    return guidance_lib.cfg_velocity(apply, path, y, num_classes=num_classes,
                                 guidance=w)
  return guidance_lib.cfg_velocity(apply, path, y, num_classes=num_classes,
                               guidance=guidance)


def make_sampler(velocity: Callable, path: paths_lib.Path,
                 spec: generate.Spec, *, project: bool,
                 unroll: bool = False) -> Callable:
  """fn(params, x0, y, t_start=0, t_end=1, num_steps=None) -> (x, stats).

  velocity(params, y) -> (x, t) -> v at full resolution. project: the
  band projection of v (the spec's, or the run's trained output
  projection), integrated in coefficient space. stats["nfe"] counts
  network evaluations (a CFG call of 2B counts once, as the batch is
  evaluated in one call). Jit it with static t_start, t_end, num_steps
  (jit_sampler). unroll: fixed-step solvers, the step loop unrolled
  (sampling.integrate: FLOP counts).
  """
  def run(params, x0, y, t_start=0.0, t_end=1.0, num_steps=None):
    vfn = velocity(params, y)
    if sampling.is_adaptive(spec.solver):
      kwargs = dict(rtol=spec.rtol, atol=spec.atol)
    else:
      kwargs = dict(num_steps=int(num_steps or spec.num_steps),
                    allocation=spec.step_allocation, return_stats=True,
                    unroll=unroll)
    return sampling.sample(vfn, path, x0, solver=spec.solver,
                           project=project, t_start=t_start, t_end=t_end,
                           extra_times=spec.extra_times, **kwargs)
  return run


def jit_sampler(sampler) -> Callable:
  return jax.jit(sampler, static_argnames=("t_start", "t_end", "num_steps"))


def sample_labels(num_classes: int, indices) -> jax.Array:
  """Label of each sample index: i % K, so any run of K consecutive samples
  holds every class once (a set of N = m K samples is class-balanced) and
  the class-row grid has one column per repeat. Zeros for unconditional
  models (which ignore them)."""
  return (jnp.asarray(indices).astype(jnp.int32)
          % max(int(num_classes), 1))


def labels_of(num_classes: int, spec: generate.Spec, indices,
              slots=None) -> jax.Array:
  """Labels of sample indices: [B] (sample_labels), or [B, K] for a run
  with condition slots (config.sample.slot_labels rows, or every slot the
  class i % num_classes), [B, K, L] with config.sample.slot_captions rows
  (token slots, flow/token_slots.caption_rows)."""
  if slots is None and spec.num_labels == 1:
    return sample_labels(num_classes, indices)
  k = slots.num_slots if slots is not None else spec.num_labels
  rows = spec.slot_labels
  if spec.slot_captions:
    rows = token_slots.caption_rows(slots, spec.slot_captions).tolist()
  return slots_lib.sample_labels(k, rows, num_classes, indices)


def initial_noise(path, shape, spec: generate.Spec, rng, indices):
  """x0 of the samples with global indices `indices` [B]: sample i's noise
  is drawn from fold_in(rng, i), so a sample set does not depend on how it
  is split into chunks, devices or hosts. spec.shared_bands take their
  noise from rng itself, shared by every sample of the set (the paper's
  fix-some-bands steering experiment)."""
  idx = jnp.asarray(indices, jnp.int32)
  draw = lambda i: jax.random.normal(jax.random.fold_in(rng, i),
                                     tuple(shape), jnp.float32)
  x0 = jax.vmap(draw)(idx)
  if not spec.shared_bands:
    return x0
  ref = steering.shared_band_noise(rng, path, 1, spec.shared_bands)
  sources = [0 if s in spec.shared_bands else 1
             for s in range(path.num_bands)]
  return steering.mix_noise(path, [ref, x0], sources)


def band_strip_states(path, sampler, params, x0, y, spec: generate.Spec):
  """States at every band boundary tau_0..tau_S, integrating band by band
  with the same solver: [S+1, B, H, W, C] (index 0 is the noise)."""
  tau = [float(v) for v in path.tau]
  states = [x0]
  x = x0
  for a, b in zip(tau[:-1], tau[1:]):
    # The band's share of the step budget, at least one step per segment
    # between switch times (window edges with overlap, a class-drop time).
    segments = 1 + len(sampling.switch_times(path, a, b, spec.extra_times))
    share = sampling.step_share(path, a, b, spec.step_allocation)
    n = max(segments, round(spec.num_steps * share))
    x, _ = sampler(params, x, y, t_start=a, t_end=b, num_steps=n)
    states.append(x)
  return jnp.stack(states)


def finished_bands(path, states) -> jax.Array:
  """The band strip's second row: at tau_s, the state projected on the
  bands that have finished, 0..s-1 ([S+1, B, ...]; column 0, where none
  has, is 0). The full state at tau_s still holds the unit-variance noise
  of the unfinished bands, which hides the finished coarse bands from the
  eye; their projection shows what the flow has decided so far."""
  tr = path.transform
  out = [jnp.zeros_like(states[0])]
  for s in range(1, states.shape[0]):
    keep = steering.bands_mask(path, range(s))
    out.append(tr.inverse(jnp.where(keep, tr.forward(states[s]), 0)))
  return jnp.stack(out)


def grid_layout(num_classes: int, labels) -> dict:
  """save_grid keywords: one class per row for class-conditional runs."""
  if not num_classes:
    return {}
  labels = np.asarray(labels)
  if labels.ndim == 3:
    # Token slots: a row's labels are its K x L tokens.
    labels = labels.reshape(labels.shape[0], -1)
  if labels.ndim == 2:
    # Condition slots: one row per distinct tuple of slot labels, in order
    # of first appearance (config.sample.slot_labels' row order).
    _, first, rows = np.unique(labels, axis=0, return_index=True,
                               return_inverse=True)
    order = np.argsort(np.argsort(first))
    return {"labels": order[rows.reshape(-1)], "num_classes": len(first)}
  return {"labels": labels, "num_classes": int(num_classes)}


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
  x0 = initial_noise(path, run.info.shape, spec, rng, jnp.arange(n))
  y = labels_of(run.num_classes, spec, jnp.arange(n), run.slots)
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
    done = finished_bands(path, states)
    states, done = (np.stack([decode(run.decoder, s) for s in a])
                    for a in (states, done))
    samples_lib.save_band_strip(
        os.path.join(run.workdir, "band_strip.png"),
        [r for i in range(k) for r in (states[:, i], done[:, i])], path.tau,
        row_labels=[r for i in range(k)
                    for r in (f"#{i} state", f"#{i} bands done")])
  logging.info("Wrote samples for step %d to %s", step, run.workdir)
