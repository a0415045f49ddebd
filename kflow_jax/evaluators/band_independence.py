"""Band independence: does a trained full-resolution model read the finer
bands while band s flows?

    python -m kflow_jax.tools.band_independence --config=... --workdir=DIR

docs/method.md#band-independence-of-a-trained-model. Scale-adaptive compute
rests on one claim: for an orthonormal transform without window overlap,
while band s flows the optimal velocity depends on bands 0..s only (the
finer bands are still independent noise). A full-resolution network is
free to read the finer bands; this measures how much its output on band s
does. For x1 from the data, x0 ~ N(0, I) and t uniform in band s's window:

  x_t, u_t            the run's path (paths.interpolate_and_target)
  x_t^noise           x_t with bands s+1.. replaced by a fresh noise draw
  x_t^zero            x_t with bands s+1.. set to 0
  change_noise_band = E ||P_s (v(x_t) - v(x_t^noise))||^2 / D
  change_zero_band  = E ||P_s (v(x_t) - v(x_t^zero))||^2 / D
  error_band        = E ||P_s (v(x_t) - u_t)||^2 / D     (training error)
  ratio_*           = change_*_band / error_band

with P_s the projection on band s and D = H W C (the loss's per-pixel
mean). A ratio below 1 means that what the network takes from the finer
bands moves its band-s output by less than the error it still makes
there, so dropping them (a coarse grid) costs less than the training error.
The fresh noise is what a finer band could be at that t; zeros are off the
training distribution (a harder test). change_*_finer are the same changes
on bands s+1.. (information only: that output is not used by a projected
sampler, and the optimal field is 0 there).
"""
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import adaptive
from kflow_jax.flow import adaptive_loss
from kflow_jax.data import input_pipeline
from kflow_jax.flow import paths as paths_lib
from kflow_jax.infra import metrics_io
from kflow_jax.kamp import coarse

FILE = "band_independence.json"
# Per-example quantities measured per band (see the module docstring).
QUANTITIES = ("error_band", "error_total", "target_band",
              "change_noise_band", "change_zero_band",
              "change_noise_finer", "change_zero_finer")


def check_run(path: paths_lib.Path, scale_adaptive: bool = False,
              hidden_input: bool = False) -> None:
  """Refuses a run for which the claim is not made (ValueError naming the
  problem and the fix): one band, window overlap, a transform that is not
  orthonormal (the checks scale-adaptive runs make), or a run whose field
  reads bands 0..s only by construction (scale-adaptive, or trained with
  config.path.hide_input)."""
  if path.num_bands < 2:
    raise ValueError(
        f"band independence needs a K-Flow run with at least two bands; "
        f"this run has one (transform {path.transform.name!r}, e.g. plain "
        "flow matching), so there is no finer band to replace. Use a run "
        "with config.path.num_scales >= 2 and fourier, dct or an orthogonal "
        "wavelet.")
  adaptive.check_no_overlap(
      path, what="band independence",
      fix="measure a run trained with config.path.overlap=0")
  coarse.check_orthonormal(path.transform)
  if scale_adaptive:
    raise ValueError(
        "this run is scale-adaptive (config.model.scale_adaptive=True): its "
        "field reads bands 0..s only by construction, so every change would "
        "be 0. Measure the full-resolution run of the same config "
        "(config.model.scale_adaptive=False).")
  if hidden_input:
    raise ValueError(
        "this run was trained with config.path.hide_input=True (the K-Flow "
        "default of configs/digits.py): its network never sees the finer "
        "bands, so every change would be 0. Measure a run trained with "
        "--config.path.hide_input=False.")


def replace_finer(path: paths_lib.Path, x, s: int, fill=None):
  """x [B, H, W, C] with the bands finer than s taken from `fill` (same
  shape), or set to 0 when fill is None; bands 0..s of x are kept."""
  tr = path.transform
  finer = np.asarray(path.band) > s
  c = tr.forward(x)
  new = jnp.zeros_like(c) if fill is None else tr.forward(fill)
  return tr.inverse(jnp.where(finer, new, c))


def band_energy(path: paths_lib.Path, d, keep) -> jax.Array:
  """float32 [B]: ||P d||^2 / D for P the projection on the coefficients
  where `keep` (bool numpy of coef_shape); Parseval with the transform's
  weights, exact for an orthonormal transform."""
  tr = path.transform
  c = tr.forward(d)
  e = jnp.where(keep, tr.weight * jnp.square(jnp.abs(c)), 0.0)
  return jnp.sum(e, axis=tuple(range(1, c.ndim))) / float(np.prod(tr.shape))


def draw(path: paths_lib.Path, s: int, key, shape) -> tuple:
  """(x0, fresh noise, t) of one example from its key: t uniform inside
  band s's window (adaptive_loss.band_time, half-open)."""
  r_noise, r_fresh, r_t = jax.random.split(key, 3)
  return (jax.random.normal(r_noise, shape, jnp.float32),
          jax.random.normal(r_fresh, shape, jnp.float32),
          adaptive_loss.band_time(r_t, path, s))


def measure_batch(velocity_fn: Callable, path: paths_lib.Path, s: int, x1,
                  y, keys) -> dict:
  """{quantity: float32 [B]} (QUANTITIES) for band s on data x1 [B, ...],
  labels y [B] or None, one key per example. velocity_fn(x, t, y) -> v is
  called once on the three inputs stacked on the batch axis."""
  b = x1.shape[0]
  x0, fresh, t = jax.vmap(lambda k: draw(path, s, k, x1.shape[1:]))(keys)
  x_t, u_t = paths_lib.interpolate_and_target(path, x0, x1, t)
  inputs = jnp.concatenate([x_t, replace_finer(path, x_t, s, fresh),
                            replace_finer(path, x_t, s)], axis=0)
  yy = None if y is None else jnp.tile(y, 3)
  v = velocity_fn(inputs, jnp.tile(t, 3), yy).astype(jnp.float32)
  v, v_noise, v_zero = v[:b], v[b:2 * b], v[2 * b:]
  band = np.asarray(path.band)
  own, finer = band == s, band > s
  everything = np.ones(band.shape, bool)
  return {
      "error_band": band_energy(path, v - u_t, own),
      "error_total": band_energy(path, v - u_t, everything),
      "target_band": band_energy(path, u_t, own),
      "change_noise_band": band_energy(path, v - v_noise, own),
      "change_zero_band": band_energy(path, v - v_zero, own),
      "change_noise_finer": band_energy(path, v - v_noise, finer),
      "change_zero_finer": band_energy(path, v - v_zero, finer),
  }


def summarize(per_example: dict) -> dict:
  """Means and standard errors of the per-example quantities, and the
  ratios change / error on band s (ratio of means)."""
  out = {}
  for k in QUANTITIES:
    a = np.asarray(per_example[k], np.float64)
    out[k] = float(a.mean())
    out[k + "_sem"] = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 \
        else float("nan")
  err = out["error_band"]
  for kind in ("noise", "zero"):
    out[f"ratio_{kind}"] = (out[f"change_{kind}_band"] / err if err > 0
                            else float("inf"))
  out["below_error"] = bool(out["ratio_noise"] < 1 and out["ratio_zero"] < 1)
  return out


def measure(velocity_fn: Callable, path: paths_lib.Path, images, labels,
            rng, batch_size: int) -> list:
  """One summarize() record per band s < S - 1 (plus band, window and
  count). Example i of band s draws from fold_in(fold_in(rng, s), i), so
  the numbers do not depend on batch_size."""
  images = np.asarray(images, np.float32)
  n = images.shape[0]
  batch_size = max(1, min(int(batch_size), n))
  records = []
  for s in range(path.num_bands - 1):
    fn = jax.jit(lambda x1, y, keys, s=s: measure_batch(
        velocity_fn, path, s, x1, y, keys))
    band_rng = jax.random.fold_in(rng, s)
    parts = []
    for lo in range(0, n, batch_size):
      # Every call at batch_size (the last one padded with example 0 and
      # cut back): one compile per band.
      idx = np.arange(lo, lo + batch_size)
      real = idx < n
      idx = np.where(real, idx, 0)
      keys = jax.vmap(lambda i: jax.random.fold_in(band_rng, i))(
          jnp.asarray(idx))
      y = None if labels is None else jnp.asarray(labels[idx])
      got = jax.device_get(fn(jnp.asarray(images[idx]), y, keys))
      parts.append({k: v[real] for k, v in got.items()})
    per = {k: np.concatenate([p[k] for p in parts]) for k in QUANTITIES}
    rec = {"band": s, "t_window": [float(path.tau[s]),
                                   float(path.tau[s + 1])],
           "num_examples": n}
    rec.update(summarize(per))
    records.append(rec)
  return records


def load_examples(config, split: str, num_examples: int,
                  seed: int) -> tuple:
  """(images float32 [n, H, W, C], labels int32 [n]) of the first
  num_examples real examples of `split` (fewer when a held-out split is
  smaller), read on this process alone."""
  bs = max(1, min(int(config.batch_size), int(num_examples)))
  it = input_pipeline.create(config.input, global_batch_size=bs,
                             seed=int(seed), process_index=0,
                             process_count=1, split=split)
  images, labels, have = [], [], 0
  for batch in it:
    keep = np.asarray(batch.get("mask", np.ones(bs, bool)), bool)
    images.append(np.asarray(batch["image"])[keep])
    labels.append(np.asarray(batch["label"])[keep])
    have += int(keep.sum())
    if have >= num_examples:
      break
  if not have:
    raise ValueError(f"split {split!r} of {config.input.name!r} holds no "
                     "examples.")
  return (np.concatenate(images)[:num_examples],
          np.concatenate(labels)[:num_examples].astype(np.int32))


def run_tool(run, params, step: int, *, num_examples: int = 256,
             split: str = "eval", seed: int = 0,
             batch_size: Optional[int] = None,
             params_name: str = "") -> dict:
  """The band_independence.json record of checkpoint `step` of `run`
  (experiment.Run), written into the run's workdir."""
  check_run(run.path, run.field.plan is not None,
            run.field.band_io.hide_input)
  if int(num_examples) < 2:
    raise ValueError(f"--num_examples={num_examples}: need at least 2 "
                     "(the standard errors need two).")
  images, labels = load_examples(run.config, split, int(num_examples),
                                 int(run.config.seed))
  bands = measure(run.field.network(params), run.path, images,
                  labels if run.num_classes else None,
                  jax.random.PRNGKey(int(seed)),
                  int(batch_size or run.config.batch_size))
  out = {
      "checkpoint_step": int(step), "params": params_name,
      "split": split, "num_examples": int(images.shape[0]),
      "seed": int(seed), "transform": run.path.transform.name,
      "shape": list(run.path.transform.shape),
      "cutoffs": [float(v) for v in run.path.cutoffs],
      "tau": [float(v) for v in run.path.tau],
      "blend": run.path.blend, "bands": bands,
      "below_error": all(b["below_error"] for b in bands),
  }
  if run.workdir is not None:
    metrics_io.write_json(os.path.join(run.workdir, FILE), out)
  return out


def table(out: dict) -> str:
  """A short markdown table of a band_independence.json record."""
  rows = [
      f"band independence, step {out['checkpoint_step']}, "
      f"{out['num_examples']} {out['split']} examples, "
      f"{out['transform']} {out['shape']}",
      "| band | t window | error on band | change, noise (ratio) | change, "
      "zeros (ratio) | finer change, noise / zeros |",
      "|---|---|---|---|---|---|"]
  for b in out["bands"]:
    rows.append(
        f"| {b['band']} | [{b['t_window'][0]:.3g}, {b['t_window'][1]:.3g}) | "
        f"{b['error_band']:.4g} | {b['change_noise_band']:.3g} "
        f"({b['ratio_noise']:.3g}) | {b['change_zero_band']:.3g} "
        f"({b['ratio_zero']:.3g}) | {b['change_noise_finer']:.3g} / "
        f"{b['change_zero_finer']:.3g} |")
  return "\n".join(rows)
