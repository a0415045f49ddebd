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
from typing import NamedTuple, Optional

from kflow_jax.flow import sampling


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
  shared_bands: tuple
  use_ema: bool
  ema_decay: Optional[float]
  seed: int
  save_latents: bool
  at_end: bool

  @property
  def extra_times(self) -> tuple:
    """Times besides the band edges where the sampling field switches."""
    return () if self.class_drop_t is None else (self.class_drop_t,)


def parse_spec(scfg, num_classes: int, num_bands: int) -> Spec:
  """Checks config.sample against the run and returns its Spec."""
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
      class_drop_t=t_drop if t_drop >= 0 else None, shared_bands=shared,
      use_ema=bool(scfg.use_ema),
      ema_decay=None if scfg.ema_decay is None else float(scfg.ema_decay),
      seed=int(scfg.seed), save_latents=bool(scfg.save_latents),
      at_end=bool(scfg.at_end))


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
