r"""--mode=restore, --mode=edit and --mode=mix: steering a trained run by band.

  python -m kflow_jax.main --config=configs/digits.py --workdir=DIR \
      --mode=restore --config.restore.degradation=lowres:4
  python -m kflow_jax.main ... --mode=edit --config.restore.keep_bands=0
  python -m kflow_jax.main ... --mode=mix --config.restore.split_band=1

All three read `config.restore` once, through `restore_spec.parse_restore`
(a run-control section, so changing it never conflicts with the saved
config.json), and the sampler of `config.sample` (solver, num_steps,
guidance; restore and edit need a fixed-step solver, as the
data-consistency step runs between solver steps).

Restoration (docs/method.md#restoration): an image from the eval split (or
a folder of images) is degraded, the bands the observation determines are
kept, the flow starts where those bands are done and a consistency step
follows every solver step (the maths: kflow_jax/flow/degradation.py), or
steps on the predicted image (restore.sampler=predict, restore.renoise);
restore.num_draws > 1 averages draws of independent noises. PSNR/SSIM
(and, with a classifier of the data set, the classifier FD to the
originals and the class accuracy) of the restoration are reported beside
the flow's start estimate, the input and bicubic. Editing is the same with
the kept bands of the image; mixing (kflow_jax/modes/mix.py) builds the
paper's steerability grid from band-wise mixed noise.
"""
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.data import input_pipeline
from kflow_jax.evaluators import classifier as classifier_lib
from kflow_jax.evaluators import evaluate
from kflow_jax.evaluators import image_quality
from kflow_jax.flow import degradation
from kflow_jax.flow import steering
from kflow_jax.generate import files as samples_lib
from kflow_jax.infra import metrics_io
from kflow_jax.modes import hybrid
from kflow_jax.modes import mix
from kflow_jax.modes import restore_spec

MODES = restore_spec.MODES


# ----------------------------------------------------------------------------
# Inputs, the field and outputs.

# Figures of many images fold into blocks of this many rows side by side
# (files.fold_rows): 64 restored images make an 8 x 8-block grid, not a
# strip 64 rows tall.
FIGURE_ROWS = 8


def load_images(run, rspec: restore_spec.RestoreSpec):
  """(images [N, H, W, C] in [-1, 1], labels [N] or None) of the source."""
  n = rspec.num_images
  if run.decoder is not None:
    raise ValueError(
        "--mode=restore/edit degrade and compare pixels; this run models "
        "VAE latents. Use a pixel-space config.")
  if rspec.source == "eval":
    it = input_pipeline.create(run.config.input,
                               global_batch_size=min(n, 256),
                               seed=rspec.seed, split="eval", finite=True)
    images, labels = [], []
    for batch in it:
      keep = np.asarray(batch["mask"]) > 0
      images.append(np.asarray(batch["image"])[keep])
      labels.append(np.asarray(batch["label"])[keep])
      if sum(len(v) for v in images) >= n:
        break
    return (np.concatenate(images)[:n].astype(np.float32),
            np.concatenate(labels)[:n].astype(np.int32))
  # pylint: disable=g-import-not-at-top
  from kflow_jax.data import folder
  from kflow_jax.data import preprocess
  # pylint: enable=g-import-not-at-top
  h, w, c = run.info.shape
  if h != w:
    raise ValueError(f"folder images are center-cropped to squares; the run's "
                     f"images are {h}x{w}.")
  files, _, _ = folder.scan(rspec.source)
  out = []
  for f in files[:n]:
    with open(f, "rb") as fh:
      img = preprocess.decode_image(fh.read())
    out.append(preprocess.to_unit_range(
        preprocess.fit_image(img, h, "center", c)))
  if not out:
    raise ValueError(f"no images in {rspec.source}.")
  # Folder images carry no labels the model knows: config.restore.label.
  return np.stack(out), None


def _prior_images(run, count: int, seed: int):
  """`count` training images (one batch of the train split), or None."""
  if count <= 0:
    return None
  it = input_pipeline.create(run.config.input, global_batch_size=count,
                             seed=seed, split="train")
  return np.asarray(next(iter(it))["image"], np.float32)


def _tag(step: int, text: str) -> str:
  clean = "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")
  return f"step_{step:08d}_{clean}"


def image_metrics(images, reference) -> dict:
  """PSNR and SSIM per image (evaluators.image_quality: dm-pix on [0, 1])."""
  return {"psnr": [float(v) for v in image_quality.psnr(images, reference)],
          "ssim": [float(v) for v in image_quality.ssim(images, reference)]}


def classifier_metrics(run, columns: dict, originals, labels) -> dict:
  """With a classifier of the data set (evaluate.find_classifier), per
  column: the classifier FD to the originals (a restoration can gain PSNR
  by blurring; the FD sees it) and the class accuracy against the images'
  labels; {} without one."""
  path = evaluate.find_classifier(run)
  if path is None or len(originals) < 2:
    return {}
  clf = classifier_lib.load(path, dataset=run.config.input.name,
                            image_shape=tuple(run.info.shape))
  out = {"file": path}
  for name, images in columns.items():
    out[name] = {"fd": classifier_lib.frechet_distance(clf, images,
                                                       originals)}
    if labels is not None:
      out[name]["accuracy"] = classifier_lib.class_accuracy(clf, images,
                                                            labels)
  return out


# ----------------------------------------------------------------------------
# The modes.


def _kept_bands(run, rspec, op, fractions) -> int:
  """m of the kept bands 0..m (see RestoreSpec.keep_bands)."""
  path = run.path
  if rspec.t_start is not None:
    # SDEdit-style: a chosen start time, whatever the bands (e.g. plain
    # flow matching started where a K-Flow run's kept bands end).
    return int(np.sum(np.asarray(path.tau[1:-1]) <= rspec.t_start)) - 1
  if rspec.keep_bands is not None:
    return rspec.keep_bands
  if op.kind == "inpaint":
    # A hole leaves every band unknown inside it: the band-wise share only
    # counts the known area (0.75 for a quarter hole), and keeping the
    # filled estimate's coarse band freezes a flat patch into the hole
    # (digits, 8x8 hole: PSNR 13.5 kept vs 15.2 generated from t = 0).
    return -1
  return degradation.auto_keep(fractions, rspec.determined)


def _options_tag(rspec) -> str:
  """File-name suffix of the non-default estimate / sampler / draws."""
  tag = "_wiener" if rspec.estimate == "wiener" else ""
  tag += "_matched" if rspec.match_noise else ""
  if rspec.sampler == "predict":
    tag += "_predict" + (f"_renoise{rspec.renoise:g}" if rspec.renoise
                         else "")
  return tag + (f"_draws{rspec.num_draws}" if rspec.num_draws > 1 else "")


def restore_mode(run, params, step: int,
                 rspec: restore_spec.RestoreSpec) -> dict:
  """--mode=restore: degrade, restore, write PNG + JSON; returns the JSON."""
  path, spec = run.path, run.spec
  op = degradation.parse_operator(rspec.degradation, run.info.shape)
  images, labels = load_images(run, rspec)
  n = len(images)
  rng = jax.random.key(rspec.seed)
  r_obs, r_noise = jax.random.split(rng)
  x_true = jnp.asarray(images)
  y_obs = op.apply(x_true, r_obs)
  sigma = float(rspec.degradation.split(":")[1]) if op.kind == "noise" else None
  prior = _prior_images(run, rspec.prior_examples, rspec.seed)
  fractions = degradation.determined_fractions(path, op, y_obs, sigma, prior)
  if rspec.estimate == "wiener":
    op = degradation.with_wiener(op, prior, sigma)
  if rspec.match_noise and rspec.t_start is None:
    # y's noise counted as the path's: the latest start where it fits.
    rspec = rspec._replace(t_start=degradation.matched_time(path, sigma))
  m = _kept_bands(run, rspec, op, fractions)
  t_start = (rspec.t_start if rspec.t_start is not None
             else float(path.tau[m + 1]))
  # noise:sigma has no consistency step (its C is 0; see flow/degradation)
  # unless its estimate is the Wiener filter (C: the filter's gain).
  observed = (op.observed if rspec.consistency and (
      op.kind != "noise" or rspec.estimate == "wiener") else None)
  y_all = rspec.labels(labels, n)

  @jax.jit
  def restore_batch(params, y_obs, x0, y, keys):
    # The run's sampling field at full resolution (a scale-adaptive run's
    # too: each band's network on its grid; exact, the compute saving is
    # its sampler's, not used by this steering flow).
    return degradation.run_flow(run.field.velocity(params, y, spec), path,
                                spec, x0, op.estimate(y_obs), t_start,
                                observed, rspec.num_steps,
                                project=run.field.projects(spec),
                                sampler=rspec.sampler,
                                renoise=rspec.renoise, keys=keys)

  def restore_all(key):
    # One draw: the noise of all n images from `key` (so the result does
    # not depend on batch_size), per-image keys of the re-noising.
    noise = jax.random.normal(key, x_true.shape, jnp.float32)
    if rspec.match_noise:
      noise = degradation.matched_noise(path, noise, t_start, sigma)
    keys = jax.random.split(jax.random.fold_in(key, 1 << 30), n)
    return np.concatenate([np.asarray(restore_batch(
        params, y_obs[i:j], noise[i:j],
        None if y_all is None else y_all[i:j], keys[i:j]))
                           for i, j in rspec.batches(n)])

  restored, first = degradation.mean_of_draws(restore_all, r_noise,
                                              rspec.num_draws)
  shown = np.asarray(op.display(y_obs))
  columns = {"input": shown, "restored": restored}
  if rspec.num_draws > 1:
    columns["draw"] = first
  # The flow's start (strongest simple baseline), and the classical one.
  columns["estimate"] = np.asarray(op.estimate(y_obs))
  if op.baseline is not None:
    columns["bicubic"] = np.asarray(op.baseline(y_obs))
  metrics = {name: image_metrics(v, x_true) for name, v in columns.items()}
  result = {
      "step": int(step), "degradation": op.text, "source": rspec.source,
      "num_images": n, "keep_bands": m, "t_start": t_start,
      "keep_bands_chosen": ("t_start" if rspec.t_start is not None else
                            "auto" if rspec.keep_bands is None else "config"),
      "determined_fractions": fractions,
      "determined_threshold": rspec.determined,
      "determined_on": (f"{prior.shape[0]} training images"
                        if prior is not None else "white noise"),
      "consistency": observed is not None,
      "estimate": rspec.estimate, "match_noise": rspec.match_noise,
      "sampler": rspec.sampler,
      "renoise": rspec.renoise, "num_draws": rspec.num_draws,
      "solver": spec.solver if rspec.sampler == "ode" else "predict",
      "num_steps": degradation.flow_steps(path, spec, t_start,
                                          rspec.num_steps),
      "per_image": metrics,
      "mean": {name: {k: float(np.mean(v)) for k, v in per.items()}
               for name, per in metrics.items()},
      "classifier": classifier_metrics(run, columns, images, labels)}
  if op.kind == "lowres":
    f = int(rspec.degradation.split(":")[1])
    err = np.abs(np.asarray(steering.area_downsample(jnp.asarray(restored), f))
                 - np.asarray(y_obs)).max()
    result["consistency_error"] = float(err)
  if jax.process_index() == 0:
    base = os.path.join(run.workdir, "restore_mode",
                        _tag(step, op.text) + f"_keep{m}" +
                        (f"_t{t_start:g}" if rspec.t_start is not None
                         else "") +
                        ("" if observed is not None or op.kind == "noise"
                         else "_nocons") + _options_tag(rspec))
    cols = list(columns) + ["original"]
    grid = np.stack([columns[c] for c in columns] + [images], axis=1)
    samples_lib.save_labelled_grid(base + ".png", grid[:64], cols,
                                   [f"#{i}" for i in range(min(n, 64))],
                                   max_rows=FIGURE_ROWS)
    metrics_io.write_json(base + ".json", result)
    logging.info(
        "Restored %d images (%s, keep bands 0..%d, t_start %.3f): %s -> "
        "%s.{png,json}", n, op.text, m, t_start,
        ", ".join(f"{k} PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f}"
                  for k, v in result["mean"].items()), base)
  return result


def edit_mode(run, params, step: int,
              rspec: restore_spec.RestoreSpec) -> np.ndarray:
  """--mode=edit: keep chosen bands of each image, regenerate the others
  config.restore.num_edits times; returns [N, 2 + E, H, W, C]."""
  path, spec = run.path, run.spec
  keep = rspec.keep_bands
  free = [s for s in range(path.num_bands) if s not in keep]
  t_start = float(path.tau[free[0]])
  images, labels = load_images(run, rspec)
  n, e = len(images), rspec.num_edits
  x = jnp.repeat(jnp.asarray(images), e, axis=0)
  y_all = rspec.labels(None if labels is None else np.repeat(labels, e),
                       n * e)
  noise = jax.random.normal(jax.random.key(rspec.seed), x.shape, jnp.float32)
  observed = lambda v: degradation.band_part(path, v, keep)

  @jax.jit
  def edit_batch(params, x, x0, y):
    return degradation.run_flow(run.field.velocity(params, y, spec), path,
                                spec, x0, x, t_start, observed,
                                rspec.num_steps,
                                project=run.field.projects(spec))

  out = []
  for i, j in rspec.batches(n * e):
    out.append(np.asarray(edit_batch(params, x[i:j], noise[i:j],
                                     None if y_all is None else y_all[i:j])))
  edits = np.concatenate(out).reshape((n, e) + images.shape[1:])
  kept = np.asarray(degradation.band_part(path, jnp.asarray(images), keep))
  grid = np.concatenate([images[:, None], kept[:, None], edits], axis=1)
  if jax.process_index() == 0:
    join = "-".join(str(b) for b in keep)
    base = os.path.join(run.workdir, "edit_mode",
                        f"step_{step:08d}_keep{join}")
    samples_lib.save_labelled_grid(
        base + ".png", grid[:64],
        ["original", f"bands {join}"] + [f"edit {k}" for k in range(e)],
        [f"#{i}" for i in range(min(n, 64))], max_rows=FIGURE_ROWS)
    logging.info("Edited %d images keeping bands %s (start t=%.3f): %s.png",
                 n, keep, t_start, base)
  return grid


def main(run, params, step: int, mode: str):
  """Dispatch of --mode=restore|edit|mix|hybrid (kflow_jax/main.py): config.restore
  read once into the RestoreSpec the mode runs on."""
  rspec = restore_spec.parse_restore(
      run.config.restore, mode, image_shape=run.info.shape,
      num_bands=run.path.num_bands, num_classes=run.num_classes)
  run_mode = {"restore": restore_mode, "edit": edit_mode,
              "mix": mix.mix_mode, "hybrid": hybrid.hybrid_mode}[mode]
  return run_mode(run, params, step, rspec)
