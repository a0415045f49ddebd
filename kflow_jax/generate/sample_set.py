"""--mode=sample: a set of samples of one checkpoint, as chunk files.

`sample` streams config.sample.num_samples samples, sharded over every
device and host, to <workdir>/sample_mode/<tag>/chunk_*.npz with
samples.json beside them (how the set was made: spec, checkpoint, EMA,
NFE per chunk); a relaunch resumes at the first missing chunk of the same
set. `make_chunk_fn` is the jitted chunk (the training loop's periodic
evaluation samples through it too); `load_samples` reads a set back.
The sampler is the run's (run.field.sampler: full resolution or
scale-adaptive, whichever the run trains).
"""
import json
import os
from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from kflow_jax import generate
from kflow_jax.generate import files as samples_lib
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.infra import checkpointing
from kflow_jax.infra import metrics_io
from kflow_jax.infra import sharding

SET_FILE = "samples.json"
# How float samples become the set's uint8 images: "round" to the nearest
# level (the default), or "truncate" as ADM's sampler does (for the "adm"
# FID protocol, evaluators/preprocess.QUANTIZATION).
QUANTIZATIONS = ("round", "truncate")


def sample_set_dir(run, step: int, quantization: str = "round") -> str:
  """Where --mode=sample writes the set of checkpoint `step` (the field's
  tag keeps a scale-adaptive sampler's set in its own directory, and
  "_trunc" a truncated set beside the rounded one)."""
  tag = generate.sample_tag(run.spec, step) + run.field.tag
  if quantization == "truncate":
    tag += "_trunc"
  return os.path.join(run.workdir, "sample_mode", tag)


def chunk_size(spec: generate.Spec, num_devices: int) -> int:
  """Samples per chunk: spec.batch_size rounded up to a multiple of the
  device count, so every device gets the same share of each chunk."""
  return -(-spec.batch_size // num_devices) * num_devices


def _chunk_file(directory: str, c: int) -> str:
  return os.path.join(directory, f"chunk_{c:06d}.npz")


def _set_record(run, step: int, chunk: int, quantization: str) -> dict:
  """What identifies a sample set: a relaunch must match it to resume."""
  spec = run.spec
  decay = None
  if spec.use_ema:
    decay = float(spec.ema_decay if spec.ema_decay is not None
                  else run.ema_decays[0])
  # The slot keys only for runs with condition slots: the records of sets
  # made before slots existed stay as they were.
  new_keys = run.slots or spec.num_labels > 1 or spec.guidance_matrix
  skip = {"at_end"} | (set() if new_keys else {
      "slot_labels", "guidance_matrix", "guidance_mode", "label_switch_t",
      "factorized_cutoffs"}) | (set() if spec.slot_captions else {
          "slot_captions"})
  spec_record = {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in spec._asdict().items() if k not in skip}
  # The network's band I/O belongs to the set's identity as before it
  # moved from the spec to the run's field (same keys, same place).
  spec_record.update(run.field.band_io._asdict())
  return {
      "checkpoint_step": int(step), "ema_decay": decay,
      "spec": spec_record,
      "num_samples": spec.num_samples, "chunk_size": int(chunk),
      "shape": list(run.info.shape), "num_classes": run.num_classes,
      "labels": ("slot rows [n, K, L]: config.sample.slot_captions row "
                 "i % R tokenized (a class slot's id at position 0)"
                 if spec.slot_captions else
                 "slot rows [n, K]: config.sample.slot_labels row i % R, "
                 "or i % num_classes in every slot"
                 if run.slots or spec.num_labels > 1 else
                 "i % num_classes" if run.num_classes else None),
      "transform": run.transform.name,
      "cutoffs": list(run.path.cutoffs), "tau": list(run.path.tau),
      "config_hash": checkpointing.config_hash(run.config),
      # Empty for full resolution, so records of those sets stay as they
      # were; {"scale_adaptive": True} otherwise.
      **run.field.record,
      "images": "uint8 [n, H, W, C], decoded" if run.decoder else
                "uint8 [n, H, W, C]",
      # Only truncated sets say so: rounded sets keep their old records.
      **({"quantization": quantization} if quantization != "round"
         else {}),
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
  sampler = run.field.sampler(spec)
  bsh = sharding.batch_sharding(mesh)
  rng = jax.random.PRNGKey(spec.seed)

  def fn(params, start):
    idx = jax.lax.with_sharding_constraint(
        start + jnp.arange(chunk, dtype=jnp.int32), bsh)
    x0 = sampler_lib.initial_noise(path, run.info.shape, spec, rng, idx)
    y = sampler_lib.labels_of(run.num_classes, spec, idx, run.slots)
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


def _chunk_counts(stats) -> dict:
  """The NFE record of one chunk (per band too for a scale-adaptive
  sampler, which counts each band's calls at its grid)."""
  counts = {"nfe": int(stats["nfe"])}
  if "nfe_per_band" in stats:
    counts.update(
        nfe_per_band=[int(v) for v in stats["nfe_per_band"]],
        nfe_full_equivalent=float(stats["nfe_full_equivalent"]))
  return counts


def _summary(run, chunks: list) -> dict:
  """samples.json's NFE means over the chunks."""
  nfes = [v["nfe"] for v in chunks]
  out = dict(complete=True, nfe_mean=float(np.mean(nfes)),
             nfe_max=int(np.max(nfes)))
  if "nfe_per_band" in chunks[0]:
    out.update(
        nfe_per_band_mean=np.mean([v["nfe_per_band"] for v in chunks],
                                  axis=0).tolist(),
        nfe_full_equivalent_mean=float(np.mean(
            [v["nfe_full_equivalent"] for v in chunks])),
        band_grids=list(run.field.band_grids))
    logging.info("Scale-adaptive NFE per band (grids %s): %s, "
                 "full-resolution equivalent %.2f", out["band_grids"],
                 out["nfe_per_band_mean"], out["nfe_full_equivalent_mean"])
  return out


def sample(run, params, step: int, quantization: str = "round") -> str:
  """--mode=sample: spec.num_samples samples of checkpoint `step`, streamed
  to <workdir>/sample_mode/<tag>/chunk_*.npz (uint8 images, labels, global
  indices; latents too with sample.save_latents) with samples.json
  beside them (how the set was made, NFE per chunk). Sharded over every
  device and host; a relaunch resumes at the first missing chunk. Host
  memory holds one chunk at a time. quantization: one of QUANTIZATIONS,
  how float samples become uint8 (samples.json records "truncate").
  Returns the set's directory."""
  if quantization not in QUANTIZATIONS:
    raise ValueError(f"quantization={quantization!r}; use one of "
                     f"{QUANTIZATIONS}.")
  spec = run.spec
  directory = sample_set_dir(run, step, quantization)
  fn, chunk = make_chunk_fn(run, with_stats=True)
  n = spec.num_samples
  num_chunks = -(-n // chunk)
  record = _set_record(run, step, chunk, quantization)
  lead = jax.process_index() == 0
  meta_file = os.path.join(directory, SET_FILE)
  if lead:
    os.makedirs(directory, exist_ok=True)
  start = _start_chunk(directory, record, num_chunks)
  if jax.process_count() > 1:
    # Every host must start at the same chunk: process 0's view decides.
    start = int(multihost_utils.broadcast_one_to_all(np.int32(start)))
  meta = dict(record, complete=False, chunks={})
  if start and os.path.exists(meta_file):
    with open(meta_file) as fh:
      meta["chunks"] = json.load(fh).get("chunks", {})
  metrics_io.write_json(meta_file, meta)
  if start:
    logging.info("Resuming the sample set in %s at chunk %d of %d.",
                 directory, start, num_chunks)
  progress = metrics_io.Progress(start, num_chunks)
  for c in range(start, num_chunks):
    x, y, stats = fn(params, np.int32(c * chunk))
    keep = min(chunk, n - c * chunk)
    x, y = _host_array(x)[:keep], _host_array(y)[:keep]
    counts = _chunk_counts(jax.device_get(stats))
    if lead:
      arrays = {"labels": y.astype(np.int32),
                "indices": np.arange(c * chunk, c * chunk + keep)}
      if spec.save_latents and run.decoder is not None:
        arrays["latents"] = x.astype(np.float32)
        x = sampler_lib.decode(run.decoder, x)
      arrays["images"] = samples_lib.to_uint8(
          x, truncate=quantization == "truncate")
      f = _chunk_file(directory, c)
      with open(f + ".tmp", "wb") as fh:
        np.savez(fh, **arrays)
      os.replace(f + ".tmp", f)  # a chunk exists only when complete
      meta["chunks"][str(c)] = counts
      metrics_io.write_json(meta_file, meta)
    timing = progress.update(c + 1)
    logging.info("Sample chunk %d/%d (%d samples) NFE %d | %.2f chunks/s | "
                 "ETA %ds", c + 1, num_chunks, keep, counts["nfe"],
                 timing["steps_per_s"], int(timing["eta_s"]))
  if lead:
    meta.update(_summary(run, list(meta["chunks"].values())))
    metrics_io.write_json(meta_file, meta)
    first = load_samples(directory, limit=256)
    samples_lib.save_grid(os.path.join(directory, "grid.png"),
                          first["images"],
                          **sampler_lib.grid_layout(run.num_classes,
                                                    first["labels"]))
    logging.info("Wrote %d samples of step %d to %s (solver %s, NFE per "
                 "chunk: mean %.1f, max %d)", n, step, directory,
                 spec.solver, meta["nfe_mean"], meta["nfe_max"])
  return directory


def iter_chunks(directory: str, limit: Optional[int] = None):
  """The chunks of a sample set written by `sample`, in index order, one
  dict of arrays at a time (images uint8, labels, indices, and latents if
  saved), so host memory holds one chunk; `limit` stops after the first
  that many samples (None or 0: all)."""
  with open(os.path.join(directory, SET_FILE)) as fh:
    meta = json.load(fh)
  num_chunks = -(-meta["num_samples"] // meta["chunk_size"])
  seen = 0
  for c in range(num_chunks):
    f = _chunk_file(directory, c)
    if not os.path.exists(f):
      raise ValueError(
          f"{directory} lacks {os.path.basename(f)}: the sample set is "
          "incomplete; relaunch --mode=sample to finish it.")
    with np.load(f) as d:
      part = {k: d[k] for k in d.files}
    if limit:
      part = {k: v[:limit - seen] for k, v in part.items()}
    yield part
    seen += len(part["indices"])
    if limit and seen >= limit:
      return


def quantization_of(directory: str) -> str:
  """How a sample set's images were quantised (one of QUANTIZATIONS)."""
  with open(os.path.join(directory, SET_FILE)) as fh:
    return json.load(fh).get("quantization", "round")


def load_samples(directory: str, limit: Optional[int] = None) -> dict:
  """The arrays of a sample set written by `sample`, in index order:
  images uint8, labels, indices (and latents if saved); `limit` reads
  only the first chunks."""
  parts = list(iter_chunks(directory, limit))
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
