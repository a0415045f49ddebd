"""Shared types of the data subpackage: DatasetInfo, Prepared, ArraySource.

A data set family (embedded, TFDS, image folder, latents) is a `Family`: two
functions of (config.input, split): `info` answers cheaply (no image is
decoded), `prepare` returns the random-access source and the grain transform
that turns its raw records into model inputs. `input_pipeline` does the rest
(sharding, shuffling, batching, state) the same way for every family.
"""
from typing import Any, Callable, NamedTuple, Optional

import numpy as np


class DatasetInfo(NamedTuple):
  """What the model and the trainer need to know before reading data.

  shape: (H, W, C) of one model input ("image" in batches; latents too).
  num_classes: number of labels (labels are 0..num_classes-1); 1 when the
    data set has no classes (all labels 0).
  num_examples: examples in the split asked for (all processes together).
  """
  shape: tuple
  num_classes: int
  num_examples: int


class Prepared(NamedTuple):
  """A split ready for grain.

  source: random access (`len`, `[i]`) raw records (see preprocess.py).
  transform: a grain RandomMap turning a raw record into
    {"image": float32 [H, W, C], "label": int32}; it must honour
    `random_flip` only through the per-example rng it is given.
  info: the split's DatasetInfo.
  """
  source: Any
  transform: Any
  info: DatasetInfo


class Family(NamedTuple):
  """A data set family: info(cfg, split) and prepare(cfg, split, train)."""
  info: Callable[[Any, str], DatasetInfo]
  prepare: Callable[[Any, str, bool], Prepared]
  default_size: Optional[int]
  default_flip: bool


class ArraySource:
  """Random access over in-memory arrays: record i = {"image", "label"}.

  Picklable (plain numpy), so grain worker processes get their own copy.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(
          f"{len(images)} images but {len(labels)} labels; they must match.")
    self._images = images
    self._labels = labels

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict:
    return {"image": self._images[index], "label": int(self._labels[index])}

  def __repr__(self) -> str:
    return f"ArraySource(n={len(self)}, image={self._images.shape[1:]})"


class PaddedSource:
  """A process's slice of a source for finite (eval/encode) reading.

  Every process gets `length` records: its own indices (start, start+step,
  ...) and then copies of the first record marked "_valid": False, so all
  processes see the same number of full batches (multi-host arrays need
  equal local shapes) and a mask says which examples are real.
  """

  def __init__(self, source, start: int, step: int, length: int):
    self._source = source
    self._indices = np.arange(start, len(source), step)
    self._length = int(length)
    if self._length < len(self._indices):
      raise ValueError("PaddedSource length is shorter than the slice.")

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    valid = index < len(self._indices)
    record = dict(self._source[int(self._indices[index if valid else 0])])
    record["_valid"] = valid
    return record


def resolve_size(cfg, family: Family, name: str) -> int:
  """config.input.image_size, or the family's default when it is None."""
  size = cfg.image_size
  if size is None:
    size = family.default_size
  if size is None:
    raise ValueError(
        f"data set {name!r} has no default image size; set "
        "config.input.image_size (e.g. 32 or 256).")
  size = int(size)
  if size < 1:
    raise ValueError(f"config.input.image_size must be positive, got {size}.")
  return size


def resolve_flip(cfg, family: Family) -> bool:
  """config.input.random_flip, or the family default when it is None."""
  flip = cfg.random_flip
  return family.default_flip if flip is None else bool(flip)
