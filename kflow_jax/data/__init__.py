"""Data set families behind `kflow_jax.data.input_pipeline`.

One module per concern: `preprocess` (crop/resize/flip/scale), `embedded`
(digits, mnist5k, natural_patches), `tfds_sources` (TFDS array_record data sets),
`folder` (image folders converted to array_record), `latents` (encoded
latent data sets), `records` (the array_record format shared by the last
two). `get(name)` returns the `base.Family` of a data set name; its error
lists the valid names.
"""
import importlib

from kflow_jax.infra import registry
from kflow_jax.data.base import ArraySource
from kflow_jax.data.base import DatasetInfo
from kflow_jax.data.base import Family
from kflow_jax.data.base import Prepared

# name -> (module, attribute, key or None) of its base.Family. Modules load
# lazily so that importing the pipeline does not import tfds (slow) unless
# a TFDS data set is used. To add a family: write a module with a
# base.Family and register its name here.
_TFDS = "kflow_jax.data.tfds_sources"
DATASETS = registry.Registry("data set", "config.input")
DATASETS.register("digits", ("kflow_jax.data.embedded", "DIGITS", None))
DATASETS.register("mnist5k", ("kflow_jax.data.embedded", "MNIST5K", None))
DATASETS.register("natural_patches",
                  ("kflow_jax.data.embedded", "PATCHES", None))
for _name in ("cifar10", "mnist", "celeb_a", "celeb_a_hq", "imagenet2012",
              "lsun/church_outdoor", "tfds"):
  DATASETS.register(_name, (_TFDS, "FAMILIES", _name))
DATASETS.register("folder", ("kflow_jax.data.folder", "FOLDER", None))
DATASETS.register("latents", ("kflow_jax.data.latents", "LATENTS", None))


def names() -> list:
  """Valid values of config.input.name."""
  return DATASETS.names()


def get(name: str) -> Family:
  """The Family for config.input.name; ValueError listing valid names."""
  module, attr, key = DATASETS.get(name)
  family = getattr(importlib.import_module(module), attr)
  return family if key is None else family[key]


__all__ = ["ArraySource", "DatasetInfo", "Family", "Prepared", "get", "names"]
