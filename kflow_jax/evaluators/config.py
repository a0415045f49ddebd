"""config.evals read once: the EvalSpec of --mode=eval and the in-training
evaluation.

`parse_evals` is the one reader of the section (its keys and defaults:
kflow_jax/config_lib/sections.py, `evals_defaults`); it checks every
value, so a typo fails before minutes of sampling, and the evaluation code
takes the spec.
"""
from typing import NamedTuple

from kflow_jax.evaluators import preprocess

METRICS = ("loss", "cheap", "fid")


class EvalSpec(NamedTuple):
  """A checked config.evals (see config_lib.sections.evals_defaults).

  num_samples / num_reference: None for all of the set / the split.
  """
  metrics: tuple
  samples: str
  num_samples: object
  reference_split: str
  num_reference: object
  classifier: str
  inception_weights: str
  check_weights_hash: bool
  fid_reference: str
  protocol: str
  feature_batch_size: int
  every_steps: int
  train_num_samples: int
  plots: bool


def _count(ecfg, key: str):
  n = int(ecfg[key])
  if n < 0:
    raise ValueError(f"config.evals.{key}={n} must be >= 0 (0: all).")
  return n or None


def parse_evals(ecfg) -> EvalSpec:
  """Checks config.evals and returns its EvalSpec."""
  metrics = tuple(ecfg.metrics)
  unknown = [m for m in metrics if m not in METRICS]
  if unknown or not metrics:
    raise ValueError(f"config.evals.metrics={metrics} has unknown {unknown}; "
                     f"choose from {METRICS}, e.g. "
                     "--config.evals.metrics=loss,cheap.")
  protocol = str(ecfg.protocol)
  if protocol not in preprocess.PROTOCOLS:
    raise ValueError(f"config.evals.protocol={protocol!r}; valid: "
                     f"{preprocess.PROTOCOLS}.")
  # train_num_samples: the in-training metrics need at least 2 samples.
  for key, low in (("feature_batch_size", 1), ("every_steps", 0),
                   ("train_num_samples", 2)):
    if int(ecfg[key]) < low:
      raise ValueError(f"config.evals.{key} must be >= {low}, got "
                       f"{ecfg[key]}.")
  return EvalSpec(
      metrics=metrics, samples=str(ecfg.samples),
      num_samples=_count(ecfg, "num_samples"),
      reference_split=str(ecfg.reference_split),
      num_reference=_count(ecfg, "num_reference"),
      classifier=str(ecfg.classifier),
      inception_weights=str(ecfg.inception_weights),
      check_weights_hash=bool(ecfg.check_weights_hash),
      fid_reference=str(ecfg.fid_reference), protocol=protocol,
      feature_batch_size=int(ecfg.feature_batch_size),
      every_steps=int(ecfg.every_steps),
      train_num_samples=int(ecfg.train_num_samples), plots=bool(ecfg.plots))
