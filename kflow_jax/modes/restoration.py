r"""--mode=restore, --mode=edit and --mode=mix: steering a trained run by band.

  python -m kflow_jax.main --config=configs/digits.py --workdir=DIR \
      --mode=restore --config.restore.degradation=lowres:4
  python -m kflow_jax.main ... --mode=edit --config.restore.keep_bands=0
  python -m kflow_jax.main ... --mode=mix --config.restore.split_band=1

All three read `config.restore` (default_config below; it is a run-control
section, so changing it never conflicts with the saved config.json) and the
sampler of `config.sample` (solver, num_steps, guidance; fixed-step solvers
only, as the data-consistency step runs between solver steps).

Restoration (docs/method.md#restoration): an image from the eval split (or
a folder of images) is degraded by a named operator (`parse_operator`), the
bands that the observation determines are kept, the flow starts at the band
time where those bands are done, and after every solver step a
data-consistency step puts the observed component of the state back on the
path toward the observation:

  x1_ref  = operator.estimate(y)              (image consistent with y)
  x_start = paths.interpolate(path, x0, x1_ref, tau_{m+1})
  after each step to t:  x <- x + C (interpolate(path, x0, x1_ref, t) - x)

with C the operator's observed component (`Operator.observed`): for lowres
the orthogonal projection on block-constant images (so at t = 1 the result
satisfies area_downsample(x) == y exactly), for inpaint the known-pixel
mask, for blur the Wiener gain, for noise nothing (the observation carries
noise; imposing it would put the noise back). Editing is the same with
C = the projection on the kept bands and x1_ref = the image; mixing builds
the paper's steerability grid from band-wise mixed noise.
"""
import json
import math
import os
from typing import Callable, NamedTuple, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import numpy as np

from kflow_jax.flow import adaptive
from kflow_jax import generate
from kflow_jax.data import input_pipeline
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import sampling
from kflow_jax.flow import steering
from kflow_jax.evaluators import image_quality
from kflow_jax.generate import files as samples_lib

MODES = ("restore", "edit", "mix")
OPERATORS = ("lowres:N", "blur:SIGMA", "noise:SIGMA", "inpaint:X0,Y0,X1,Y1")
# Tikhonov weight of the blur's consistency step and estimate: the Wiener
# gain g^2 / (g^2 + lambda) is 1/2 where the blur keeps 10 % of a frequency.
# Exact inversion (lambda -> 0) would amplify float and 8-bit rounding by
# 1/g, without bound at high frequencies.
BLUR_LAMBDA = 1e-2
NUM_PROBES = 32
EXACT_DIM = 1024


def default_config() -> ml_collections.ConfigDict:
  """Every config.restore key with its default (modes restore, edit, mix)."""
  return ml_collections.ConfigDict(dict(
      # Input images of restore and edit: "eval" (the eval split) or a
      # directory of PNG/JPEG files (class subfolders allowed; center-cropped
      # and resized to the run's image size).
      source="eval",
      num_images=8,
      batch_size=64,
      # restore: lowres:N (area down-sampling by N), blur:SIGMA (Gaussian,
      # pixels), noise:SIGMA (additive, in [-1, 1] units),
      # inpaint:X0,Y0,X1,Y1 (box [X0, X1) x [Y0, Y1) unknown).
      degradation="lowres:2",
      # restore: "auto" keeps bands 0..m, m the last of the leading bands of
      # which the observation determines at least `determined` (a fraction,
      # determined_fractions; inpaint: -1); or an int m >= -1 (-1: generate
      # every band).
      # edit: comma-separated bands to keep ("auto": "0").
      keep_bands="auto",
      determined=0.5,
      # restore: start the flow at this t instead (SDEdit-style, any path;
      # e.g. flow matching at the t where a K-Flow run starts); -1: at the
      # end of the kept bands.
      t_start=-1.0,
      # Training images the determined fractions are measured on (0: white
      # noise instead, a data-free but pessimistic measure).
      prior_examples=256,
      consistency=True,        # restore: data-consistency step after each step
      num_steps=0,             # 0: the spec's share of num_steps after t_start
      num_edits=4,             # edit: variations per image
      rows=4, cols=4,          # mix: grid size
      split_band=1,            # mix: bands < split from the row noise
      # mix: band cut-offs of the noise split and the correlations, on the
      # run's transform (e.g. (0.0, 0.5, 1.0) for a one-band flow-matching
      # run); None: the path's bands.
      mix_cutoffs=config_dict.placeholder(tuple),
      label=0,                 # mix (and folder images): class of
                               # conditional runs; -1 = the null class
      seed=0))


# ----------------------------------------------------------------------------
# Degradation operators.


class Operator(NamedTuple):
  """A degradation y = A(x) and what restoration needs to know about it.

  apply(x, rng) -> y: the observation (lowres: the small image).
  estimate(y) -> x: an image consistent with y (A-wise), the data stand-in
    of the restoration path.
  observed(x) -> C x: the component of x the observation fixes (linear,
    symmetric, 0 <= C <= I); zero for noise.
  display(y) -> x: y shown at the image size (lowres: nearest up-sampling).
  baseline(y) -> x or None: the classical answer to compare with (lowres:
    bicubic up-sampling).
  """
  text: str
  kind: str
  apply: Callable
  estimate: Callable
  observed: Callable
  display: Callable
  baseline: Optional[Callable]


def _numbers(text: str, arg: str, count: int, kind=float) -> list:
  parts = arg.split(",") if arg else []
  try:
    vals = [kind(p) for p in parts]
  except ValueError:
    vals = []
  if len(vals) != count:
    raise ValueError(
        f"degradation {text!r}: expected {count} "
        f"{'integer' if kind is int else 'number'}(s) after ':'; valid forms: "
        f"{', '.join(OPERATORS)}.")
  return vals


def _gaussian_gain(shape, sigma: float) -> np.ndarray:
  """Transfer function of a periodic Gaussian blur on the rfft2 grid."""
  h, w = shape
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  return np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))


def _filter(x, gain):
  h, w = x.shape[1:3]
  xf = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2))
  g = jnp.asarray(gain[None, :, :, None], jnp.float32)
  return jnp.fft.irfft2(xf * g, s=(h, w), axes=(1, 2)).astype(jnp.float32)


def parse_operator(text: str, shape: Sequence[int]) -> Operator:
  """Operator of a degradation string (OPERATORS) for images of `shape`."""
  h, w, _ = (int(v) for v in shape)
  kind, _, arg = str(text).partition(":")
  if kind == "lowres":
    (f,) = _numbers(text, arg, 1, int)
    if f < 2 or h % f or w % f:
      raise ValueError(
          f"degradation {text!r}: N must be an integer >= 2 dividing the "
          f"image size {h}x{w}.")
    down = lambda x: steering.area_downsample(x, f)
    up = lambda y: steering.box_upsample(y, f)
    # Projection on {x: down(x) = y}: box up-sampling is down's
    # pseudo-inverse (down(up(y)) = y, up(down(.)) an orthogonal projection).
    fix = lambda x, y: x + up(y - down(x))
    bicubic = lambda y: jax.image.resize(
        y, (y.shape[0], h, w, y.shape[3]), "bicubic")
    return Operator(
        text=text, kind=kind, apply=lambda x, rng=None: down(x),
        # Bicubic detail, then corrected so that it matches y exactly.
        estimate=lambda y: fix(bicubic(y), y),
        observed=lambda x: up(down(x)), display=up, baseline=bicubic)
  if kind == "blur":
    (sigma,) = _numbers(text, arg, 1)
    if not sigma > 0:
      raise ValueError(f"degradation {text!r}: sigma must be > 0.")
    g = _gaussian_gain((h, w), sigma)
    wiener = g ** 2 / (g ** 2 + BLUR_LAMBDA)
    return Operator(
        text=text, kind=kind, apply=lambda x, rng=None: _filter(x, g),
        estimate=lambda y: _filter(y, g / (g ** 2 + BLUR_LAMBDA)),
        observed=lambda x: _filter(x, wiener), display=lambda y: y,
        baseline=None)
  if kind == "noise":
    (sigma,) = _numbers(text, arg, 1)
    if not sigma > 0:
      raise ValueError(f"degradation {text!r}: sigma must be > 0.")

    def add_noise(x, rng=None):
      if rng is None:
        raise ValueError("degradation noise needs an rng.")
      return x + sigma * jax.random.normal(rng, x.shape, jnp.float32)
    return Operator(text=text, kind=kind, apply=add_noise,
                    estimate=lambda y: y, observed=jnp.zeros_like,
                    display=lambda y: y, baseline=None)
  if kind == "inpaint":
    x0, y0, x1, y1 = _numbers(text, arg, 4, int)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
      raise ValueError(
          f"degradation {text!r}: need 0 <= X0 < X1 <= {w} and "
          f"0 <= Y0 < Y1 <= {h} (the box of unknown pixels).")
    known = np.ones((1, h, w, 1), np.float32)
    known[:, y0:y1, x0:x1] = 0.0

    def fill(y):
      # Unknown pixels start at the mean of the known ones (per image and
      # channel): the flow generates them; this is only the path's stand-in.
      mean = (y * known).sum((1, 2), keepdims=True) / known.sum()
      return y * known + mean * (1.0 - known)
    return Operator(
        text=text, kind=kind, apply=lambda x, rng=None: x * known,
        estimate=fill, observed=lambda x: x * known,
        display=lambda y: y * known, baseline=None)
  raise ValueError(f"unknown degradation {text!r}; valid forms: "
                   f"{', '.join(OPERATORS)}.")


def band_part(path: paths_lib.Path, x, bands) -> jax.Array:
  """P x with P = T^-1 1_bands T: the part of x in `bands`."""
  tr = path.transform
  keep = steering.bands_mask(path, bands)
  return tr.inverse(jnp.where(keep, tr.forward(x), 0))


def determined_fractions(path: paths_lib.Path, op: Operator,
                         y=None, sigma: Optional[float] = None,
                         prior=None) -> list:
  """Per band s, the share of the band that the observation fixes.

  Linear operators: E<P_s z, C P_s z> / E||P_s z||^2, 1 when band s lies in
  the observed subspace, 0 when the observation says nothing about it.
  With `prior` (example images of the data, e.g. training images) z runs
  over them: the share of the band's energy *in the data* that is observed.
  Natural images put most of a band's energy at its low end, where area
  averaging passes most, so this is larger than the white-noise share.
  Without it z is white: tr(P_s^T C P_s) / tr(P_s^T P_s), exact (z over
  the pixel basis) up to EXACT_DIM values, else NUM_PROBES white probes of
  a fixed key. Noise: the Wiener gain of the
  band, 1 - sigma^2 / (mean |c|^2 of the band of y), from the observation y
  (each coefficient of an orthonormal transform carries noise power
  sigma^2).
  """
  tr = path.transform
  if op.kind == "noise":
    c = np.asarray(tr.forward(y))
    power = np.abs(c) ** 2
    out = []
    for s in range(path.num_bands):
      band = power[:, path.band == s].mean()
      out.append(float(max(0.0, 1.0 - sigma ** 2 / max(band, 1e-12))))
    return out
  dim = int(np.prod(tr.shape))
  if prior is not None:
    z = jnp.asarray(prior, jnp.float32)
  elif dim <= EXACT_DIM:
    z = jnp.eye(dim, dtype=jnp.float32).reshape((dim,) + tuple(tr.shape))
  else:
    z = jax.random.normal(jax.random.key(0), (NUM_PROBES,) + tr.shape)
  out = []
  for s in range(path.num_bands):
    q = band_part(path, z, [s])
    num, den = float(jnp.sum(q * op.observed(q))), float(jnp.sum(q * q))
    # A band the prior never uses (den = 0) has nothing to generate.
    out.append(num / den if den > 1e-12 * q.size else 1.0)
  return out


def auto_keep(fractions: Sequence[float], threshold: float) -> int:
  """The last m such that bands 0..m are all determined >= threshold, at
  most S-2 (something must be left to generate); -1 if band 0 is not."""
  m = -1
  for f in fractions[:-1]:
    if f < threshold:
      break
    m += 1
  return m


def parse_keep(value, num_bands: int, mode: str):
  """config.restore.keep_bands -> int m (restore; None = auto) or a tuple
  of bands (edit)."""
  text = str(value).strip()
  if mode == "edit":
    text = "0" if text == "auto" else text
    try:
      bands = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
      bands = ()
    if not bands or not all(0 <= b < num_bands for b in bands) or (
        len(bands) == num_bands):
      raise ValueError(
          f"config.restore.keep_bands={value!r}: --mode=edit needs a comma-"
          f"separated list of the bands to keep, within 0..{num_bands - 1} "
          "and not all of them, e.g. 0.")
    return bands
  if text == "auto":
    return None
  try:
    m = int(text)
  except ValueError:
    m = -2
  if not -1 <= m <= num_bands - 2:
    raise ValueError(
        f"config.restore.keep_bands={value!r}: --mode=restore keeps bands "
        f"0..m; give auto or an integer m in -1..{num_bands - 2} (-1: keep "
        "none).")
  return m


# ----------------------------------------------------------------------------
# Integration with a consistency step.


def _num_steps(path, spec, t_start: float, num_steps: int) -> int:
  segments = 1 + len(sampling.switch_times(path, t_start, 1.0,
                                           spec.extra_times))
  share = sampling.step_share(path, t_start, 1.0, spec.step_allocation)
  n = int(num_steps) or round(spec.num_steps * share)
  return max(segments, n)


def consistency_step(path: paths_lib.Path, observed: Callable, x0, x1_ref,
                     project: bool) -> Callable:
  """post_step(y, t1): x <- x + C(interpolate(path, x0, x1_ref, t1) - x).

  The component C of the state that the observation fixes is set to its
  value on the path toward x1_ref at the step's end time, at the noise
  level the path has there (ILVR-style); at t1 = 1 it is C x1_ref, so the
  result agrees with the observation (exactly for projections C).
  With band projection the sampler's state is T(x).
  """
  tr = path.transform
  batch = x0.shape[0]

  def fix(x, t1):
    ref = paths_lib.interpolate(path, x0, x1_ref,
                                jnp.full((batch,), t1, jnp.float32))
    return x + observed(ref - x)

  if not project:
    return fix
  return lambda c, t1: tr.forward(fix(tr.inverse(c), t1))


def run_flow(velocity_fn: Callable, path: paths_lib.Path, spec, x0, x1_ref,
             t_start: float, observed: Optional[Callable],
             num_steps: int = 0) -> jax.Array:
  """Integrates from the path point toward x1_ref at t_start to 1, with the
  consistency step for `observed` (None: none)."""
  if sampling.is_adaptive(spec.solver):
    raise ValueError(
        f"--mode=restore/edit run a consistency step between solver steps, "
        f"which needs a fixed-step solver; config.sample.solver="
        f"{spec.solver!r} is adaptive. Use e.g. "
        "--config.sample.solver=heun.")
  t = jnp.full((x0.shape[0],), t_start, jnp.float32)
  x_start = paths_lib.interpolate(path, x0, x1_ref, t)
  post = (None if observed is None else
          consistency_step(path, observed, x0, x1_ref, spec.projects))
  return sampling.sample(
      velocity_fn, path, x_start, solver=spec.solver,
      num_steps=_num_steps(path, spec, t_start, num_steps),
      project=spec.projects, t_start=t_start, extra_times=spec.extra_times,
      allocation=spec.step_allocation, post_step=post)


# ----------------------------------------------------------------------------
# Metrics.


def image_metrics(images, reference) -> dict:
  """PSNR and SSIM per image (evaluators.image_quality: dm-pix on [0, 1])."""
  return {"psnr": [float(v) for v in image_quality.psnr(images, reference)],
          "ssim": [float(v) for v in image_quality.ssim(images, reference)]}


def band_correlations(path: paths_lib.Path, grid) -> dict:
  """Per-band Pearson correlations in a mix grid [R, K, H, W, C]: mean over
  pairs in the same row, in different rows, in the same column and in
  different columns of the band parts P_s x."""
  g = jnp.asarray(grid)
  r, k = g.shape[:2]
  out = {}
  for s in range(path.num_bands):
    part = np.asarray(band_part(path, g.reshape((r * k,) + g.shape[2:]),
                                [s])).reshape(r * k, -1).astype(np.float64)
    part -= part.mean(axis=1, keepdims=True)
    part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    corr = part @ part.T
    row, col = np.divmod(np.arange(r * k), k)
    off = ~np.eye(r * k, dtype=bool)
    same_row = off & (row[:, None] == row[None, :])
    same_col = off & (col[:, None] == col[None, :])
    mean = lambda m: float(corr[m].mean()) if m.any() else float("nan")
    out[f"band_{s}"] = {
        "same_row": mean(same_row), "other_row": mean(off & ~same_row),
        "same_col": mean(same_col), "other_col": mean(off & ~same_col)}
  return out


# ----------------------------------------------------------------------------
# Inputs.


def load_images(run, rcfg):
  """(images [N, H, W, C] in [-1, 1], labels [N] or None) of the source."""
  n = int(rcfg.num_images)
  if n < 1:
    raise ValueError(f"config.restore.num_images must be >= 1, got {n}.")
  if run.decoder is not None:
    raise ValueError(
        "--mode=restore/edit degrade and compare pixels; this run models "
        "VAE latents. Use a pixel-space config.")
  if rcfg.source == "eval":
    it = input_pipeline.create(run.config.input,
                               global_batch_size=min(n, 256),
                               seed=int(rcfg.seed), split="eval", finite=True)
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
  if not os.path.isdir(rcfg.source):
    raise ValueError(
        f"config.restore.source={rcfg.source!r} is neither 'eval' nor a "
        "directory of images.")
  h, w, c = run.info.shape
  if h != w:
    raise ValueError(f"folder images are center-cropped to squares; the run's "
                     f"images are {h}x{w}.")
  files, _, _ = folder.scan(rcfg.source)
  out = []
  for f in files[:n]:
    with open(f, "rb") as fh:
      img = preprocess.decode_image(fh.read())
    out.append(preprocess.to_unit_range(
        preprocess.fit_image(img, h, "center", c)))
  if not out:
    raise ValueError(f"no images in {rcfg.source}.")
  # Folder images carry no labels the model knows: config.restore.label.
  return np.stack(out), None


def _prior_images(run, count: int, seed: int):
  """`count` training images (one batch of the train split), or None."""
  if count <= 0:
    return None
  it = input_pipeline.create(run.config.input, global_batch_size=count,
                             seed=seed, split="train")
  return np.asarray(next(iter(it))["image"], np.float32)


def _labels(run, labels, count: int, rcfg):
  if not run.num_classes:
    return None
  if labels is not None:
    return jnp.asarray(labels, jnp.int32)
  label = int(rcfg.label)
  if not -1 <= label < run.num_classes:
    raise ValueError(f"config.restore.label={label} must be in -1..."
                     f"{run.num_classes - 1} (-1: the null class).")
  label = run.num_classes if label == -1 else label
  return jnp.full((count,), label, jnp.int32)


def _velocity(run, params, y):
  if run.adaptive is not None:
    # The network of a scale-adaptive run on each band's grid, as a
    # full-resolution field for the steering samplers below (exact; the
    # compute saving is the sampler's, not used here).
    return adaptive.full_velocity(
        lambda p, yy, frame: generate.velocity_fn(
            run.model, p, run.path, run.num_classes, run.spec, yy, frame),
        run.adaptive, params, y)
  return generate.velocity_fn(run.model, params, run.path, run.num_classes,
                              run.spec, y)


def _batches(n: int, bs: int):
  for i in range(0, n, bs):
    yield i, min(n, i + bs)


def _outdir(run, mode):
  return os.path.join(run.workdir, f"{mode}_mode")


def _write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(path + ".tmp", path)


def _tag(step: int, text: str) -> str:
  clean = "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")
  return f"step_{step:08d}_{clean}"


# ----------------------------------------------------------------------------
# The modes.


def restore_mode(run, params, step: int) -> dict:
  """--mode=restore: degrade, restore, write PNG + JSON; returns the JSON."""
  rcfg, path, spec = run.config.restore, run.path, run.spec
  op = parse_operator(rcfg.degradation, run.info.shape)
  keep = parse_keep(rcfg.keep_bands, path.num_bands, "restore")
  images, labels = load_images(run, rcfg)
  n = len(images)
  rng = jax.random.key(int(rcfg.seed))
  r_obs, r_noise = jax.random.split(rng)
  x_true = jnp.asarray(images)
  y_obs = op.apply(x_true, r_obs)
  sigma = float(rcfg.degradation.split(":")[1]) if op.kind == "noise" else None
  prior = _prior_images(run, int(rcfg.prior_examples), int(rcfg.seed))
  fractions = determined_fractions(path, op, y_obs, sigma, prior)
  t_fixed = float(rcfg.get("t_start", -1.0))
  if t_fixed >= 0:
    # SDEdit-style: a chosen start time, whatever the bands (e.g. plain
    # flow matching started where a K-Flow run's kept bands end).
    if keep is not None or not 0.0 <= t_fixed < 1.0:
      raise ValueError(
          f"config.restore.t_start={t_fixed} must lie in [0, 1) and replaces "
          f"the kept bands; leave config.restore.keep_bands at 'auto' (it "
          f"is {rcfg.keep_bands!r}), or set t_start=-1 to start at the kept "
          "bands' end.")
    m = int(np.sum(np.asarray(path.tau[1:-1]) <= t_fixed)) - 1
  elif keep is not None:
    m = keep
  elif op.kind == "inpaint":
    # A hole leaves every band unknown inside it: the band-wise share only
    # counts the known area (0.75 for a quarter hole), and keeping the
    # filled estimate's coarse band freezes a flat patch into the hole
    # (digits, 8x8 hole: PSNR 13.5 kept vs 15.2 generated from t = 0).
    m = -1
  else:
    m = auto_keep(fractions, float(rcfg.determined))
  t_start = t_fixed if t_fixed >= 0 else float(path.tau[m + 1])
  # noise:sigma has no consistency step (its C is 0; see the module doc).
  observed = (op.observed if bool(rcfg.consistency) and op.kind != "noise"
              else None)
  y_all = _labels(run, labels, n, rcfg)

  @jax.jit
  def restore_batch(params, y_obs, x0, y):
    return run_flow(_velocity(run, params, y), path, spec, x0,
                    op.estimate(y_obs), t_start, observed,
                    int(rcfg.num_steps))

  noise = jax.random.normal(r_noise, x_true.shape, jnp.float32)
  out = []
  for i, j in _batches(n, int(rcfg.batch_size)):
    out.append(np.asarray(restore_batch(
        params, y_obs[i:j], noise[i:j],
        None if y_all is None else y_all[i:j])))
  restored = np.concatenate(out)
  shown = np.asarray(op.display(y_obs))
  columns = {"input": shown, "restored": restored}
  if op.baseline is not None:
    columns["bicubic"] = np.asarray(op.baseline(y_obs))
  metrics = {name: image_metrics(v, x_true) for name, v in columns.items()}
  result = {
      "step": int(step), "degradation": op.text, "source": rcfg.source,
      "num_images": n, "keep_bands": m, "t_start": t_start,
      "keep_bands_chosen": ("t_start" if t_fixed >= 0 else
                            "auto" if keep is None else "config"),
      "determined_fractions": fractions,
      "determined_threshold": float(rcfg.determined),
      "determined_on": (f"{prior.shape[0]} training images"
                        if prior is not None else "white noise"),
      "consistency": observed is not None,
      "solver": spec.solver,
      "num_steps": _num_steps(path, spec, t_start, int(rcfg.num_steps)),
      "per_image": metrics,
      "mean": {name: {k: float(np.mean(v)) for k, v in per.items()}
               for name, per in metrics.items()}}
  if op.kind == "lowres":
    f = int(rcfg.degradation.split(":")[1])
    err = np.abs(np.asarray(steering.area_downsample(jnp.asarray(restored), f))
                 - np.asarray(y_obs)).max()
    result["consistency_error"] = float(err)
  if jax.process_index() == 0:
    base = os.path.join(_outdir(run, "restore"),
                        _tag(step, op.text) + f"_keep{m}" +
                        (f"_t{t_start:g}" if t_fixed >= 0 else "") +
                        ("" if observed is not None or op.kind == "noise"
                         else "_nocons"))
    cols = list(columns) + ["original"]
    grid = np.stack([columns[c] for c in columns] + [images], axis=1)
    samples_lib.save_labelled_grid(base + ".png", grid[:64], cols,
                                   [f"#{i}" for i in range(min(n, 64))])
    _write_json(base + ".json", result)
    logging.info(
        "Restored %d images (%s, keep bands 0..%d, t_start %.3f): %s -> "
        "%s.{png,json}", n, op.text, m, t_start,
        ", ".join(f"{k} PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f}"
                  for k, v in result["mean"].items()), base)
  return result


def edit_mode(run, params, step: int) -> np.ndarray:
  """--mode=edit: keep chosen bands of each image, regenerate the others
  config.restore.num_edits times; returns [N, 2 + E, H, W, C]."""
  rcfg, path, spec = run.config.restore, run.path, run.spec
  keep = parse_keep(rcfg.keep_bands, path.num_bands, "edit")
  free = [s for s in range(path.num_bands) if s not in keep]
  t_start = float(path.tau[free[0]])
  images, labels = load_images(run, rcfg)
  n, e = len(images), int(rcfg.num_edits)
  if e < 1:
    raise ValueError(f"config.restore.num_edits must be >= 1, got {e}.")
  x = jnp.repeat(jnp.asarray(images), e, axis=0)
  y_all = _labels(run, None if labels is None else np.repeat(labels, e),
                  n * e, rcfg)
  noise = jax.random.normal(jax.random.key(int(rcfg.seed)), x.shape,
                            jnp.float32)
  observed = lambda v: band_part(path, v, keep)

  @jax.jit
  def edit_batch(params, x, x0, y):
    return run_flow(_velocity(run, params, y), path, spec, x0, x, t_start,
                    observed, int(rcfg.num_steps))

  out = []
  for i, j in _batches(n * e, int(rcfg.batch_size)):
    out.append(np.asarray(edit_batch(params, x[i:j], noise[i:j],
                                     None if y_all is None else y_all[i:j])))
  edits = np.concatenate(out).reshape((n, e) + images.shape[1:])
  kept = np.asarray(band_part(path, jnp.asarray(images), keep))
  grid = np.concatenate([images[:, None], kept[:, None], edits], axis=1)
  if jax.process_index() == 0:
    join = "-".join(str(b) for b in keep)
    base = os.path.join(_outdir(run, "edit"),
                        f"step_{step:08d}_keep{join}")
    samples_lib.save_labelled_grid(
        base + ".png", grid[:64],
        ["original", f"bands {join}"] + [f"edit {k}" for k in range(e)],
        [f"#{i}" for i in range(min(n, 64))])
    logging.info("Edited %d images keeping bands %s (start t=%.3f): %s.png",
                 n, keep, t_start, base)
  return grid


def analysis_path(path: paths_lib.Path, cutoffs) -> paths_lib.Path:
  """The bands --mode=mix splits the noise by and measures: the path's own,
  or `cutoffs` on the same transform (config.restore.mix_cutoffs). The
  latter lets a one-band run (plain flow matching through an orthonormal
  transform) be steered and scored with the same bands as a K-Flow run."""
  if not cutoffs:
    return path
  return paths_lib.make_path(path.transform, cutoffs=tuple(cutoffs))


def mix_noise_grid(path: paths_lib.Path, rng, rows: int, cols: int,
                   split: int) -> jax.Array:
  """x0 [rows*cols, H, W, C]: sample (i, j) takes bands < split from row
  noise i and bands >= split from column noise j (orthonormal transforms
  only, steering.check_mixable)."""
  if not 1 <= split <= path.num_bands - 1:
    raise ValueError(
        f"config.restore.split_band={split}: the rows take bands "
        f"0..split-1 and the columns the rest, so split must lie in "
        f"1..{path.num_bands - 1} (the path has {path.num_bands} bands).")
  shape = path.transform.shape
  r_row, r_col = jax.random.split(rng)
  row = jax.random.normal(r_row, (rows, 1) + shape, jnp.float32)
  col = jax.random.normal(r_col, (1, cols) + shape, jnp.float32)
  full = (rows * cols,) + shape
  row = jnp.broadcast_to(row, (rows, cols) + shape).reshape(full)
  col = jnp.broadcast_to(col, (rows, cols) + shape).reshape(full)
  return steering.mix_noise(path, [row, col],
                            [0 if s < split else 1
                             for s in range(path.num_bands)])


def mix_mode(run, params, step: int) -> dict:
  """--mode=mix: the steerability grid; rows share the coarse bands' noise,
  columns the fine bands'. Writes PNG + JSON (band correlations)."""
  rcfg, path, spec = run.config.restore, run.path, run.spec
  rows, cols, split = int(rcfg.rows), int(rcfg.cols), int(rcfg.split_band)
  if rows < 1 or cols < 1:
    raise ValueError(f"config.restore.rows and cols must be >= 1, got "
                     f"{rows}, {cols}.")
  bands = analysis_path(path, rcfg.get("mix_cutoffs"))
  x0 = mix_noise_grid(bands, jax.random.key(int(rcfg.seed)), rows, cols,
                      split)
  y = _labels(run, None, rows * cols, rcfg)
  sampler = generate.jit_sampler(generate.make_sampler(
      run.model, path, run.num_classes, spec, plan=run.adaptive))
  out = []
  for i, j in _batches(rows * cols, int(rcfg.batch_size)):
    out.append(generate.decode(run.decoder, sampler(
        params, x0[i:j], jnp.zeros((j - i,), jnp.int32) if y is None
        else y[i:j])[0]))
  grid = np.concatenate(out).reshape((rows, cols) + out[0].shape[1:])
  corr = band_correlations(bands, grid) if run.decoder is None else {}
  result = {"step": int(step), "rows": rows, "cols": cols,
            "split_band": split, "row_bands": list(range(split)),
            "col_bands": list(range(split, bands.num_bands)),
            "cutoffs": [float(c) for c in bands.cutoffs],
            "path_cutoffs": [float(c) for c in path.cutoffs],
            "correlations": corr}
  if jax.process_index() == 0:
    base = os.path.join(_outdir(run, "mix"),
                        f"step_{step:08d}_split{split}")
    samples_lib.save_labelled_grid(
        base + ".png", grid,
        [f"fine {j}" for j in range(cols)],
        [f"coarse {i}" for i in range(rows)])
    _write_json(base + ".json", result)
    logging.info("Mix grid %dx%d (bands <%d per row): %s.{png,json}; "
                 "correlations %s", rows, cols, split, base, corr)
  return result


def main(run, params, step: int, mode: str):
  """Dispatch of --mode=restore|edit|mix (kflow_jax/main.py)."""
  if mode == "restore":
    return restore_mode(run, params, step)
  if mode == "edit":
    return edit_mode(run, params, step)
  if mode == "mix":
    return mix_mode(run, params, step)
  raise ValueError(f"restoration modes are {MODES}, got {mode!r}.")
