"""config.restore read once: the RestoreSpec of --mode=restore / edit / mix.

`parse_restore` is the one reader of the section (its keys and defaults:
kflow_jax/config_lib, `restore`); it checks every value against the run
and the mode before any image is read, and the modes take the spec, never
the raw ConfigDict.
"""
import os
from typing import Iterator, NamedTuple, Optional, Sequence

import jax.numpy as jnp

from kflow_jax.flow import degradation

MODES = ("restore", "edit", "mix", "hybrid")


class RestoreSpec(NamedTuple):
  """A checked config.restore for one mode (see config_lib for the keys).

  keep_bands: restore: m, keeping bands 0..m (-1: none; None: chosen from
    the determined fractions); edit: the bands kept; mix: None.
  t_start: restore: the chosen start time (None: the end of the kept
    bands).
  estimate, match_noise, sampler, renoise, num_draws: restore: the
    flow's data stand-in and start, its steps, and the mean of how many
    draws.
  label: the class of images without labels (folder images, the mix grid)
    with -1 resolved to the null class; None for an unconditional run.
  """
  mode: str
  source: str
  num_images: int
  batch_size: int
  degradation: str
  keep_bands: object
  determined: float
  t_start: Optional[float]
  prior_examples: int
  consistency: bool
  estimate: str
  match_noise: bool
  sampler: str
  renoise: float
  num_draws: int
  num_steps: int
  num_edits: int
  rows: int
  cols: int
  row_classes: Optional[tuple]
  col_classes: Optional[tuple]
  split_band: int
  mix_cutoffs: Optional[tuple]
  label: Optional[int]
  seed: int

  def batches(self, n: int) -> Iterator[tuple]:
    """(i, j) slices of n items in batches of batch_size."""
    for i in range(0, n, self.batch_size):
      yield i, min(n, i + self.batch_size)

  def labels(self, labels, count: int):
    """Labels for `count` images: None for an unconditional run, the
    images' own when they have some, else `label` for every image."""
    if self.label is None:
      return None
    if labels is not None:
      return jnp.asarray(labels, jnp.int32)
    return jnp.full((count,), self.label, jnp.int32)


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


def _t_start(rcfg, keep) -> Optional[float]:
  t = float(rcfg.t_start)
  if t < 0:
    return None
  # SDEdit-style: a chosen start time, whatever the bands.
  if keep is not None or not t < 1.0:
    raise ValueError(
        f"config.restore.t_start={t} must lie in [0, 1) and replaces "
        f"the kept bands; leave config.restore.keep_bands at 'auto' (it "
        f"is {rcfg.keep_bands!r}), or set t_start=-1 to start at the kept "
        "bands' end.")
  return t


ESTIMATES = ("operator", "wiener")


def _restore_options(rcfg) -> None:
  """estimate, sampler, renoise and num_draws of --mode=restore."""
  if rcfg.estimate not in ESTIMATES:
    raise ValueError(f"config.restore.estimate={rcfg.estimate!r} is not one "
                     f"of {ESTIMATES}.")
  if rcfg.estimate == "wiener" and (
      not str(rcfg.degradation).startswith("noise:")
      or int(rcfg.prior_examples) < 2):
    raise ValueError(
        "config.restore.estimate='wiener' denoises noise:SIGMA with a "
        "filter fitted on config.restore.prior_examples >= 2 training "
        f"images; got degradation={rcfg.degradation!r}, prior_examples="
        f"{rcfg.prior_examples}.")
  if rcfg.match_noise and (not str(rcfg.degradation).startswith("noise:")
                           or rcfg.estimate != "operator"):
    raise ValueError(
        "config.restore.match_noise counts the noise of noise:SIGMA's "
        "observation as the path's; it needs degradation=noise:SIGMA and "
        f"estimate='operator' (got {rcfg.degradation!r}, "
        f"{rcfg.estimate!r}).")
  if rcfg.sampler not in degradation.SAMPLERS:
    raise ValueError(f"config.restore.sampler={rcfg.sampler!r} is not one "
                     f"of {degradation.SAMPLERS}.")
  r = float(rcfg.renoise)
  if not 0.0 <= r <= 1.0 or (r > 0 and rcfg.sampler != "predict"):
    raise ValueError(
        f"config.restore.renoise={r} is a share in [0, 1] of the noise "
        "redrawn at each step of sampler='predict' (it is "
        f"{rcfg.sampler!r}).")
  _at_least(rcfg, ("num_draws",), 1)


def _label(rcfg, num_classes: int) -> Optional[int]:
  if not num_classes:
    return None
  label = int(rcfg.label)
  if not -1 <= label < num_classes:
    raise ValueError(f"config.restore.label={label} must be in -1..."
                     f"{num_classes - 1} (-1: the null class).")
  return num_classes if label == -1 else label


def _at_least(rcfg, keys: Sequence[str], low: int) -> None:
  for key in keys:
    if int(rcfg[key]) < low:
      raise ValueError(f"config.restore.{key} must be >= {low}, got "
                       f"{rcfg[key]}.")


def parse_restore(rcfg, mode: str, *, image_shape: Sequence[int],
                  num_bands: int, num_classes: int) -> RestoreSpec:
  """Checks config.restore for `mode` against the run; its RestoreSpec."""
  if mode not in MODES:
    raise ValueError(f"restoration modes are {MODES}, got {mode!r}.")
  keep, t_start = None, None
  if mode == "restore":
    degradation.parse_operator(rcfg.degradation, image_shape)
    keep = parse_keep(rcfg.keep_bands, num_bands, "restore")
    t_start = _t_start(rcfg, keep)
    if not 0.0 <= float(rcfg.determined) <= 1.0:
      raise ValueError(f"config.restore.determined={rcfg.determined} is a "
                       "share of a band and must lie in [0, 1].")
    _restore_options(rcfg)
  elif mode == "edit":
    keep = parse_keep(rcfg.keep_bands, num_bands, "edit")
    _at_least(rcfg, ("num_edits",), 1)
  else:
    _at_least(rcfg, ("rows", "cols"), 1)
  classes = {}
  for key in ("row_classes", "col_classes"):
    v = rcfg[key]
    classes[key] = tuple(int(c) for c in v) if v else None
    if classes[key] and (mode != "hybrid" or not num_classes or not all(
        0 <= c < num_classes for c in classes[key])):
      raise ValueError(
          f"config.restore.{key}={classes[key]} names the classes of the "
          "--mode=hybrid grid's rows (slot 0) or columns (finer slots): "
          f"each in 0..{max(int(num_classes or 0), 1) - 1} of a "
          "class-conditional run, e.g. (0,1,2,3); other modes take none.")
  if mode not in ("mix", "hybrid"):
    _at_least(rcfg, ("num_images",), 1)
    if rcfg.source != "eval" and not os.path.isdir(rcfg.source):
      raise ValueError(
          f"config.restore.source={rcfg.source!r} is neither 'eval' nor a "
          "directory of images.")
  _at_least(rcfg, ("batch_size",), 1)
  _at_least(rcfg, ("num_steps", "prior_examples"), 0)
  cutoffs = rcfg.mix_cutoffs
  return RestoreSpec(
      mode=mode, source=str(rcfg.source), num_images=int(rcfg.num_images),
      batch_size=int(rcfg.batch_size), degradation=str(rcfg.degradation),
      keep_bands=keep, determined=float(rcfg.determined), t_start=t_start,
      prior_examples=int(rcfg.prior_examples),
      consistency=bool(rcfg.consistency), estimate=str(rcfg.estimate),
      match_noise=bool(rcfg.match_noise),
      sampler=str(rcfg.sampler), renoise=float(rcfg.renoise),
      num_draws=int(rcfg.num_draws), num_steps=int(rcfg.num_steps),
      num_edits=int(rcfg.num_edits), rows=int(rcfg.rows),
      cols=int(rcfg.cols), row_classes=classes["row_classes"],
      col_classes=classes["col_classes"], split_band=int(rcfg.split_band),
      mix_cutoffs=tuple(float(c) for c in cutoffs) if cutoffs else None,
      label=_label(rcfg, num_classes), seed=int(rcfg.seed))
