"""Data set families behind `kflow_jax.input_pipeline`.

One module per concern: `preprocess` (crop/resize/flip/scale), `embedded`
(digits, natural_patches), `tfds_sources` (TFDS array_record data sets),
`folder` (image folders converted to array_record), `latents` (encoded
latent data sets), `records` (the array_record format shared by the last
two). `get(name)` returns the `base.Family` of a data set name; its error
lists the valid names.
"""
import importlib

from kflow_jax.data.base import ArraySource
from kflow_jax.data.base import DatasetInfo
from kflow_jax.data.base import Family
from kflow_jax.data.base import Prepared

# name -> (module, attribute). Modules load lazily so that importing the
# pipeline does not import tfds (slow) unless a TFDS data set is used.
_FAMILIES = {
    "digits": ("kflow_jax.data.embedded", "DIGITS"),
    "natural_patches": ("kflow_jax.data.embedded", "PATCHES"),
}


def names() -> list:
  """Valid values of config.input.name."""
  return sorted(_FAMILIES)


def get(name: str) -> Family:
  """The Family for config.input.name; ValueError listing valid names."""
  if name not in _FAMILIES:
    raise ValueError(
        f"unknown data set config.input.name={name!r}; valid names: "
        f"{names()}.")
  module, attr = _FAMILIES[name]
  return getattr(importlib.import_module(module), attr)


__all__ = ["ArraySource", "DatasetInfo", "Family", "Prepared", "get", "names"]
