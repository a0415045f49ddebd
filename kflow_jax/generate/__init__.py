"""Generation: the sampling spec.

`config.sample` is read here once, by `parse_spec`, into a `Spec` that is
checked against the run (class-conditional or not, number of bands);
everything else (the training loop's sample grids, `--mode=sample`, the
benchmarks) reads the spec. The sampler it configures is the run's
(run.field.sampler, run/field.py) built from generate/sampler.py (full
resolution: guidance, class drop, noise and labels per sample index, band
strips, grids) or flow/adaptive_sampler.py (scale-adaptive);
generate/sample_set.py writes and reads --mode=sample's chunked sets.
"""
import hashlib
import json
from typing import NamedTuple, Optional

from kflow_jax.flow import sampling
from kflow_jax.flow import slots as slots_lib
from kflow_jax.flow import token_slots


class Spec(NamedTuple):
  """A checked config.sample (keys and meaning: config_lib.sections)."""
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
  slot_labels: tuple              # rows of K labels; () = i % num_classes
  guidance_matrix: tuple          # W[band][slot]; () = from guidance
  guidance_mode: str              # flow/slots.GUIDANCE_MODES
  label_switch_t: tuple           # one-label runs: row label k from t_k on
  factorized_cutoffs: tuple       # one-label runs: label k on split band k
  shared_bands: tuple
  use_ema: bool
  ema_decay: Optional[float]
  seed: int
  save_latents: bool
  at_end: bool
  # Runs with token slots: rows of K strings (flow/token_slots.caption_rows).
  slot_captions: tuple = ()

  @property
  def extra_times(self) -> tuple:
    """Times besides the band edges where the sampling field switches."""
    drop = () if self.class_drop_t is None else (self.class_drop_t,)
    return drop + tuple(self.label_switch_t)

  @property
  def num_labels(self) -> int:
    """Labels per sample of a one-label run's zero-shot split (1: none)."""
    if self.factorized_cutoffs:
      return len(self.factorized_cutoffs) - 1   # band edges 0 .. 1
    return 1 + len(self.label_switch_t)


def parse_spec(scfg, num_classes: int, num_bands: int,
               num_slots: int = 1, slots=None) -> Spec:
  """Checks config.sample against the run and returns its Spec (num_slots:
  the run's condition slots, flow/slots.py; 1 without; slots: the run's
  Slots, which config.sample.slot_captions needs)."""
  sampling.SOLVERS.get(scfg.solver)
  guidance = float(scfg.guidance)
  bands = tuple(int(b) for b in (scfg.guidance_bands or ()))
  shared = tuple(int(b) for b in (scfg.shared_bands or ()))
  t_drop = float(scfg.class_drop_t)
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
  rows = tuple(scfg.slot_labels or ())
  matrix = tuple(tuple(float(v) for v in r)
                 for r in (scfg.guidance_matrix or ()))
  mode = str(scfg.guidance_mode)
  switch = tuple(float(v) for v in (scfg.label_switch_t or ()))
  split = tuple(float(v) for v in (scfg.factorized_cutoffs or ()))
  zero_shot = [k for k, on in (("label_switch_t", bool(switch)),
                               ("factorized_cutoffs", bool(split))) if on]
  if zero_shot and (num_slots > 1 or not num_classes or len(zero_shot) > 1):
    raise ValueError(
        f"config.sample.{zero_shot[0]} gives a run trained with one label "
        "per image a label per time span or band (a baseline for condition "
        "slots, labels from config.sample.slot_labels rows or --mode=hybrid):"
        " it needs a class-conditional run without config.cond.slot_starts, "
        "and only one of label_switch_t / factorized_cutoffs.")
  if switch and any(not 0 < b < 1 for b in switch) or list(switch) != sorted(
      set(switch)):
    raise ValueError(f"config.sample.label_switch_t={switch} must be "
                     "increasing times inside (0, 1).")
  # A one-column matrix on a one-label run: a guidance weight per band.
  per_band = num_slots <= 1 and bool(matrix) and all(
      len(r) == 1 for r in matrix)
  slot_keys = [k for k, on in (("slot_labels", bool(rows) and not zero_shot),
                               ("guidance_matrix",
                                bool(matrix) and not per_band),
                               ("guidance_mode", mode != "active")) if on]
  if num_slots <= 1 and slot_keys:
    raise ValueError(
        f"config.sample.{slot_keys[0]} is for runs with condition slots "
        "(config.cond.slot_starts, e.g. (0, 1)), or with "
        "config.sample.label_switch_t / factorized_cutoffs; this run has one "
        "label for every band: use config.sample.guidance / guidance_bands.")
  if per_band and (len(matrix) != num_bands or bands):
    raise ValueError(
        f"config.sample.guidance_matrix of one column gives each of the "
        f"{num_bands} bands its guidance weight (it replaces "
        f"config.sample.guidance), e.g. ((1.0,), (3.0,)); got {matrix}. "
        "Leave guidance_bands empty (()) with it.")
  if split and (len(split) < 3 or split[0] != 0.0 or split[-1] != 1.0
                or list(split) != sorted(set(split))):
    raise ValueError(
        f"config.sample.factorized_cutoffs={split} must be band edges from "
        "0 to 1, increasing, at least 2 bands: e.g. (0.0, 0.5, 1.0), or a "
        "K-Flow run's path.json cutoffs.")
  if zero_shot:
    rows = slots_lib.check_rows(rows, len(split) - 1 if split
                                else 1 + len(switch), num_classes)
  if num_slots > 1:
    rows = slots_lib.check_rows(rows, num_slots, num_classes)
    if mode not in slots_lib.GUIDANCE_MODES:
      raise ValueError(f"config.sample.guidance_mode={mode!r}; valid: "
                       f"{list(slots_lib.GUIDANCE_MODES)}.")
    if matrix and (len(matrix) != num_bands
                   or any(len(r) != num_slots for r in matrix)):
      raise ValueError(
          f"config.sample.guidance_matrix must be {num_bands} rows (one per "
          f"band) of {num_slots} weights (one per slot), got {matrix}.")
    if matrix and bands:
      raise ValueError(
          "config.sample.guidance_matrix sets every band's and slot's "
          "guidance (it replaces config.sample.guidance); leave "
          "guidance_bands empty (()) with it.")
  captions = _slot_captions(scfg, slots, rows)
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
  allocation = str(scfg.step_allocation)
  if allocation not in sampling.ALLOCATIONS:
    raise ValueError(
        f"config.sample.step_allocation={allocation!r}; valid: "
        f"{list(sampling.ALLOCATIONS)}.")
  if int(scfg.num_steps) < 1:
    raise ValueError(f"config.sample.num_steps must be >= 1, got "
                     f"{scfg.num_steps}.")
  return Spec(
      num_samples=n, batch_size=bs, solver=str(scfg.solver),
      num_steps=int(scfg.num_steps), rtol=float(scfg.rtol),
      atol=float(scfg.atol), step_allocation=allocation,
      project=bool(scfg.project),
      guidance=guidance, guidance_bands=bands,
      class_drop_t=t_drop if t_drop >= 0 else None,
      slot_labels=rows, guidance_matrix=matrix, guidance_mode=mode,
      label_switch_t=switch, factorized_cutoffs=split,
      shared_bands=shared,
      use_ema=bool(scfg.use_ema),
      ema_decay=None if scfg.ema_decay is None else float(scfg.ema_decay),
      seed=int(scfg.seed), save_latents=bool(scfg.save_latents),
      at_end=bool(scfg.at_end), slot_captions=captions)


def _slot_captions(scfg, slots, rows) -> tuple:
  """config.sample.slot_captions checked (rows of K strings, tokenized once
  here so a word outside the vocabulary fails before any sampling)."""
  captions = tuple(tuple(r) if isinstance(r, (tuple, list)) else r
                   for r in (scfg.slot_captions or ()))
  if not captions:
    return ()
  if slots is None or not slots.max_tokens:
    raise ValueError(
        "config.sample.slot_captions gives token slots their captions; this "
        "run has none (config.cond.slot_kinds with a 'tokens' slot): use "
        "config.sample.slot_labels.")
  if rows:
    raise ValueError(
        "config.sample.slot_labels and slot_captions both give the rows of "
        "slot labels; set one (slot_captions takes class ids as strings).")
  token_slots.caption_rows(slots, captions)
  return tuple(tuple(str(v) for v in r) for r in captions)


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
  if spec.guidance != 1.0 and not spec.guidance_matrix:
    tag += f"_cfg{spec.guidance:g}"   # a guidance_matrix replaces it
  if spec.guidance_bands:
    tag += f"_gbands{join(spec.guidance_bands)}"
  if spec.class_drop_t is not None:
    tag += f"_drop{spec.class_drop_t:g}"
  if spec.shared_bands:
    tag += f"_shared{join(spec.shared_bands)}"
  if spec.slot_labels or spec.guidance_matrix or spec.slot_captions:
    # Rows and matrices do not fit a file name: a digest of them (the
    # captions only when given, so the older tags stay as they were).
    blob = json.dumps([spec.slot_labels, spec.guidance_matrix] + (
        [spec.slot_captions] if spec.slot_captions else [])).encode()
    tag += "_slots" + hashlib.sha256(blob).hexdigest()[:8]
  if spec.guidance_mode != "active":
    tag += f"_{spec.guidance_mode}"
  if spec.label_switch_t:
    tag += "_switch" + "-".join(f"{v:g}" for v in spec.label_switch_t)
  if spec.factorized_cutoffs:
    tag += "_factorized" + "-".join(f"{v:g}" for v in spec.factorized_cutoffs)
  if spec.project:
    tag += "_project"
  return tag
