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
import json
import os
from typing import Callable, NamedTuple, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import numpy as np

from kflow_jax.flow import adaptive
from kflow_jax.infra import checkpointing
from kflow_jax.infra import metrics_io
from kflow_jax.flow import paths
from kflow_jax.flow import sampling
from kflow_jax.infra import sharding
from kflow_jax.flow import steering
from kflow_jax.generate import files as samples_lib


def default_config() -> ml_collections.ConfigDict:
  """Every config.sample key with its default."""
  return ml_collections.ConfigDict(dict(
      # How many samples --mode=sample writes, in batches of batch_size; the
      # training loop's grids use the same count.
      num_samples=64, batch_size=64,
      # Solver (sampling.SOLVERS): fixed-step ones take num_steps (split
      # over the bands by their time share), adaptive ones rtol / atol.
      solver="euler", num_steps=40, rtol=1e-5, atol=1e-5,
      # Fixed-step solvers: num_steps split over the bands by their share
      # of t ("time") or equally ("band": short bands get as many steps as
      # long ones).
      step_allocation="time",
      project=False,            # band projection of the velocity
      guidance=1.0,             # classifier-free guidance scale w
      guidance_bands=(),        # CFG only in these bands (plain elsewhere)
      class_drop_t=-1.0,        # label only while t < it; -1 = off
      shared_bands=(),          # noise of these bands shared by all samples
      use_ema=True, ema_decay=config_dict.placeholder(float),  # None: first
      seed=1,
      save_latents=False,       # latent configs: keep latents in the chunks
      at_end=True))             # samples.png and band_strip.png at the end


class Spec(NamedTuple):
  """A checked config.sample (see default_config for the meaning)."""
  num_samples: int
  batch_size: int
  solver: str
  num_steps: int
  rtol: float
  atol: float
  step_allocation: str
  project: bool
  guidance: float
  guidance_bands: tuple
  class_drop_t: Optional[float]   # None: no class drop
  shared_bands: tuple
  use_ema: bool
  ema_decay: Optional[float]
  seed: int
  save_latents: bool
  at_end: bool
  # config.path.hide_input / project_output of the run (set by
  # experiment.setup; how the network was trained, not a sampling choice,
  # so not in the tag): it sees only the bands started at t / every
  # velocity is projected as with `project`.
  hide_input: bool = False
  project_output: bool = False

  @property
  def projects(self) -> bool:
    """Whether the sampler projects v: asked for, or trained so."""
    return self.project or self.project_output

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
  allocation = str(scfg.get("step_allocation", "time"))
  if allocation not in sampling.ALLOCATIONS:
    raise ValueError(
        f"config.sample.step_allocation={allocation!r}; valid: "
        f"{list(sampling.ALLOCATIONS)}.")
  if int(scfg.num_steps) < 1:
    raise ValueError(f"config.sample.num_steps must be >= 1, got "
                     f"{scfg.num_steps}.")
  return Spec(
      num_samples=n, batch_size=bs, solver=str(scfg.solver),
      num_steps=int(scfg.num_steps), rtol=float(scfg.get("rtol", 1e-5)),
      atol=float(scfg.get("atol", 1e-5)), step_allocation=allocation,
      project=bool(scfg.project),
      guidance=guidance, guidance_bands=bands,
      class_drop_t=t_drop if t_drop >= 0 else None, shared_bands=shared,
      use_ema=bool(scfg.use_ema),
      ema_decay=None if scfg.ema_decay is None else float(scfg.ema_decay),
      seed=int(scfg.seed), save_latents=bool(scfg.get("save_latents",
                                                       False)),
      at_end=bool(scfg.at_end))


def velocity_fn(model, params, path, num_classes: int, spec: Spec,
                y, frame=None) -> Callable:
  """(x, t) -> v of the spec's guidance and class drop for labels y.

  frame (models.layers.Frame): x is a coarse grid of the image whose
  pixels sit there on the full grid (scale-adaptive runs); None: full
  resolution.
  """
  extra = {} if frame is None else {"frame": frame}

  def network(x, t, yy):
    return model.apply({"params": params}, x, t, yy, train=False, **extra)
  apply = paths.band_network(path, network, hide_input=spec.hide_input)

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


def make_sampler(model, path, num_classes: int, spec: Spec,
                 plan=None) -> Callable:
  """fn(params, x0, y, t_start=0, t_end=1, num_steps=None) -> (x, stats).

  stats["nfe"] counts network evaluations (a CFG call of 2B counts once,
  as the batch is evaluated in one call). Jit it with static t_start,
  t_end, num_steps. plan (adaptive.Plan, a scale-adaptive run): each
  band's steps run on its coarse grid (adaptive.make_sampler); stats then
  also hold nfe_per_band and nfe_full_equivalent.
  """
  if plan is not None:
    return adaptive.make_sampler(
        lambda params, y, frame: velocity_fn(model, params, path,
                                             num_classes, spec, y, frame),
        plan, spec)
  def run(params, x0, y, t_start=0.0, t_end=1.0, num_steps=None):
    vfn = velocity_fn(model, params, path, num_classes, spec, y)
    kwargs = {}
    if sampling.is_adaptive(spec.solver):
      kwargs = dict(rtol=spec.rtol, atol=spec.atol)
    else:
      kwargs = dict(num_steps=int(num_steps or spec.num_steps),
                    allocation=spec.step_allocation, return_stats=True)
    return sampling.sample(vfn, path, x0, solver=spec.solver,
                           project=spec.projects,
                           t_start=t_start,
                           t_end=t_end, extra_times=spec.extra_times,
                           **kwargs)
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


def initial_noise(path, shape, spec: Spec, rng, indices):
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
    share = sampling.step_share(path, a, b, spec.step_allocation)
    n = max(segments, round(spec.num_steps * share))
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
  if spec.step_allocation != "time" and not sampling.is_adaptive(
      spec.solver):
    tag += f"_{spec.step_allocation}steps"
  join = lambda v: "-".join(str(int(b)) for b in v)
  if spec.guidance != 1.0:
    tag += f"_cfg{spec.guidance:g}"
  if spec.guidance_bands:
    tag += f"_gbands{join(spec.guidance_bands)}"
  if spec.class_drop_t is not None:
    tag += f"_drop{spec.class_drop_t:g}"
  if spec.shared_bands:
    tag += f"_shared{join(spec.shared_bands)}"
  if spec.project:
    tag += "_project"
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
  x0 = initial_noise(path, run.info.shape, spec, rng, jnp.arange(n))
  y = sample_labels(run.num_classes, jnp.arange(n))
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


SET_FILE = "samples.json"


def sample_set_dir(run, step: int) -> str:
  """Where --mode=sample writes the set of checkpoint `step` (a
  scale-adaptive sampler's set gets its own directory)."""
  tag = sample_tag(run.spec, step)
  if getattr(run, "adaptive", None) is not None:
    tag += "_adaptive"
  return os.path.join(run.workdir, "sample_mode", tag)


def chunk_size(spec: Spec, num_devices: int) -> int:
  """Samples per chunk: spec.batch_size rounded up to a multiple of the
  device count, so every device gets the same share of each chunk."""
  return -(-spec.batch_size // num_devices) * num_devices


def _chunk_file(directory: str, c: int) -> str:
  return os.path.join(directory, f"chunk_{c:06d}.npz")


def _set_record(run, step: int, chunk: int) -> dict:
  """What identifies a sample set: a relaunch must match it to resume."""
  spec = run.spec
  decay = None
  if spec.use_ema:
    decay = float(spec.ema_decay if spec.ema_decay is not None
                  else run.ema_decays[0])
  return {
      "checkpoint_step": int(step), "ema_decay": decay,
      "spec": {k: (list(v) if isinstance(v, tuple) else v)
               for k, v in spec._asdict().items() if k != "at_end"},
      "num_samples": spec.num_samples, "chunk_size": int(chunk),
      "shape": list(run.info.shape), "num_classes": run.num_classes,
      "labels": "i % num_classes" if run.num_classes else None,
      "transform": run.transform.name,
      "cutoffs": list(run.path.cutoffs), "tau": list(run.path.tau),
      "config_hash": checkpointing.config_hash(run.config),
      # Only when on, so records of full-resolution sets stay as they were.
      **({"scale_adaptive": True} if run.adaptive is not None else {}),
      "images": "uint8 [n, H, W, C], decoded" if run.decoder else
                "uint8 [n, H, W, C]",
  }


def _start_chunk(directory: str, record: dict, num_chunks: int) -> int:
  """First chunk to write: 0 for a new set; after a relaunch, the first
  missing chunk of the same set (any other set in the directory is an
  error, never overwritten)."""
  f = os.path.join(directory, SET_FILE)
  if not os.path.exists(f):
    return 0
  with open(f) as fh:
    saved = json.load(fh)
  diffs = [k for k in record if saved.get(k) != record[k]]
  if diffs:
    raise ValueError(
        f"{directory} holds another sample set (it differs in {diffs}); "
        "move it away, or sample into another workdir, to keep both.")
  for c in range(num_chunks):
    if not os.path.exists(_chunk_file(directory, c)):
      return c
  return num_chunks


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _host_array(x) -> np.ndarray:
  """A global (possibly multi-host) array as one numpy array."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def make_chunk_fn(run, with_stats: bool = False):
  """Jitted (params, start) -> (samples, labels, nfe) for the chunk of
  global indices start..start+C-1, sharded over every device of the mesh
  (noise, labels and the ODE alike). with_stats: the third output is the
  dict of NFE counts instead ({"nfe"}, plus "nfe_per_band" and
  "nfe_full_equivalent" for a scale-adaptive run)."""
  spec, path, mesh = run.spec, run.path, run.mesh
  chunk = chunk_size(spec, mesh.size)
  sampler = make_sampler(run.model, path, run.num_classes, spec,
                         plan=run.adaptive)
  bsh = sharding.batch_sharding(mesh)
  rng = jax.random.PRNGKey(spec.seed)

  def fn(params, start):
    idx = jax.lax.with_sharding_constraint(
        start + jnp.arange(chunk, dtype=jnp.int32), bsh)
    x0 = initial_noise(path, run.info.shape, spec, rng, idx)
    y = sample_labels(run.num_classes, idx)
    x, stats = sampler(params, x0, y)
    if run.decoder is not None and not spec.save_latents:
      x = run.decoder(x)
    nfe = jnp.asarray(stats["nfe"], jnp.int32)
    if not with_stats:
      return x, y, nfe
    out = {"nfe": nfe}
    for key in ("nfe_per_band", "nfe_full_equivalent"):
      if key in stats:
        out[key] = jnp.asarray(stats[key])
    return x, y, out

  # The params keep the shardings they were restored with (replicated or
  # fsdp); the chunk's batch axis is split over every device.
  return jax.jit(fn, out_shardings=(bsh, bsh, sharding.replicated(mesh))
                 ), chunk


def sample(run, params, step: int) -> str:
  """--mode=sample: spec.num_samples samples of checkpoint `step`, streamed
  to <workdir>/sample_mode/<tag>/chunk_*.npz (uint8 images, labels, global
  indices; latents too with sample.save_latents) with samples.json
  beside them (how the set was made, NFE per chunk). Sharded over every
  device and host; a relaunch resumes at the first missing chunk. Host
  memory holds one chunk at a time. Returns the set's directory."""
  spec = run.spec
  directory = sample_set_dir(run, step)
  fn, chunk = make_chunk_fn(run, with_stats=True)
  n = spec.num_samples
  num_chunks = -(-n // chunk)
  record = _set_record(run, step, chunk)
  lead = jax.process_index() == 0
  if lead:
    os.makedirs(directory, exist_ok=True)
  start = _start_chunk(directory, record, num_chunks)
  if jax.process_count() > 1:
    # Every host must start at the same chunk: process 0's view decides.
    start = int(multihost_utils.broadcast_one_to_all(np.int32(start)))
  meta = dict(record, complete=False, chunks={})
  if start and os.path.exists(os.path.join(directory, SET_FILE)):
    with open(os.path.join(directory, SET_FILE)) as fh:
      meta["chunks"] = json.load(fh).get("chunks", {})
  if lead:
    _write_json(os.path.join(directory, SET_FILE), meta)
  if start:
    logging.info("Resuming the sample set in %s at chunk %d of %d.",
                 directory, start, num_chunks)
  progress = metrics_io.Progress(start, num_chunks)
  for c in range(start, num_chunks):
    x, y, stats = fn(params, np.int32(c * chunk))
    keep = min(chunk, n - c * chunk)
    x, y = _host_array(x)[:keep], _host_array(y)[:keep]
    stats = jax.device_get(stats)
    nfe = int(stats["nfe"])
    counts = {"nfe": nfe}
    if "nfe_per_band" in stats:  # scale-adaptive: NFE at each band's grid
      counts.update(
          nfe_per_band=[int(v) for v in stats["nfe_per_band"]],
          nfe_full_equivalent=float(stats["nfe_full_equivalent"]))
    if lead:
      arrays = {"labels": y.astype(np.int32),
                "indices": np.arange(c * chunk, c * chunk + keep)}
      if spec.save_latents and run.decoder is not None:
        arrays["latents"] = x.astype(np.float32)
        x = decode(run.decoder, x)
      arrays["images"] = samples_lib.to_uint8(x)
      f = _chunk_file(directory, c)
      with open(f + ".tmp", "wb") as fh:
        np.savez(fh, **arrays)
      os.replace(f + ".tmp", f)  # a chunk exists only when complete
      meta["chunks"][str(c)] = counts
      _write_json(os.path.join(directory, SET_FILE), meta)
    timing = progress.update(c + 1)
    logging.info("Sample chunk %d/%d (%d samples) NFE %d | %.2f chunks/s | "
                 "ETA %ds", c + 1, num_chunks, keep, nfe,
                 timing["steps_per_s"], int(timing["eta_s"]))
  if lead:
    nfes = [v["nfe"] for v in meta["chunks"].values()]
    meta.update(complete=True, nfe_mean=float(np.mean(nfes)),
                nfe_max=int(np.max(nfes)))
    if run.adaptive is not None:
      chunks = list(meta["chunks"].values())
      meta.update(
          nfe_per_band_mean=np.mean([v["nfe_per_band"] for v in chunks],
                                    axis=0).tolist(),
          nfe_full_equivalent_mean=float(np.mean(
              [v["nfe_full_equivalent"] for v in chunks])),
          band_grids=[f"{g.shape[0]}x{g.shape[1]}"
                      for g in run.adaptive.grids])
      logging.info("Scale-adaptive NFE per band (grids %s): %s, "
                   "full-resolution equivalent %.2f",
                   meta["band_grids"], meta["nfe_per_band_mean"],
                   meta["nfe_full_equivalent_mean"])
    _write_json(os.path.join(directory, SET_FILE), meta)
    first = load_samples(directory, limit=256)
    samples_lib.save_grid(os.path.join(directory, "grid.png"),
                          first["images"],
                          **grid_layout(run.num_classes, first["labels"]))
    logging.info("Wrote %d samples of step %d to %s (solver %s, NFE per "
                 "chunk: mean %.1f, max %d)", n, step, directory,
                 spec.solver, meta["nfe_mean"], meta["nfe_max"])
  return directory


def load_samples(directory: str, limit: Optional[int] = None) -> dict:
  """The arrays of a sample set written by `sample`, in index order:
  images uint8, labels, indices (and latents if saved); `limit` reads
  only the first chunks."""
  with open(os.path.join(directory, SET_FILE)) as fh:
    meta = json.load(fh)
  num_chunks = -(-meta["num_samples"] // meta["chunk_size"])
  parts = []
  for c in range(num_chunks):
    f = _chunk_file(directory, c)
    if not os.path.exists(f):
      raise ValueError(
          f"{directory} lacks {os.path.basename(f)}: the sample set is "
          "incomplete; relaunch --mode=sample to finish it.")
    with np.load(f) as d:
      parts.append({k: d[k] for k in d.files})
    if limit is not None and sum(len(p["indices"]) for p in parts) >= limit:
      break
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return {k: v[:limit] for k, v in out.items()} if limit else out
