"""Reference images of a data set as in-memory arrays, for the metrics.

    images, labels = reference.load_split("digits", "test")
    # float32 [297, 16, 16, 1] in [-1, 1], int32 [297]

Reads through `input_pipeline` in finite mode (one ordered pass, no flips,
padding dropped), so the metrics see exactly the images the model trains
and evaluates on, with the same resizing.
"""
from typing import Optional

import numpy as np

from kflow_jax.config_lib import sections


def load_split(dataset: str, split: str = "test", *,
               image_size: Optional[int] = None,
               max_examples: Optional[int] = None,
               batch_size: int = 512, **input_overrides):
  """(images float32 [N, H, W, C] in [-1, 1], labels int32 [N]).

  Args:
    dataset: config.input.name, e.g. "digits" or "natural_patches".
    split: "train", "test" or any split name of the data set.
    image_size: config.input.image_size; None: the data set's default.
    max_examples: keep the first this many examples (in the split's fixed
      order); None: all.
    batch_size: read batch size (memory only; the result does not depend
      on it).
    **input_overrides: other config.input keys (e.g. eval_patches=500).
  """
  from kflow_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  cfg = sections.input_defaults()
  cfg.name = dataset
  if image_size is not None:
    cfg.image_size = int(image_size)
  cfg.update(input_overrides)
  if max_examples is not None and int(max_examples) < 1:
    raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}.")
  it = input_pipeline.create(cfg, global_batch_size=batch_size, seed=0,
                             split=split, finite=True)
  images, labels, count = [], [], 0
  for batch in it:
    keep = np.asarray(batch["mask"], bool)
    images.append(np.asarray(batch["image"], np.float32)[keep])
    labels.append(np.asarray(batch["label"], np.int32)[keep])
    count += int(keep.sum())
    if max_examples is not None and count >= max_examples:
      break
  images, labels = np.concatenate(images), np.concatenate(labels)
  if max_examples is not None:
    images, labels = images[:max_examples], labels[:max_examples]
  return images, labels
