"""Input pipeline facade: config.input -> per-process batches (grain).

    cfg = config_lib.base().input              # every config.input key
    info = input_pipeline.get_info(cfg)        # shape, classes, examples
    it = input_pipeline.create(cfg, global_batch_size=256, seed=0,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
    batch = next(it)   # {"image": f32 [256 // P, H, W, C], "label": i32 [...]}
    state = it.get_state()   # small JSON-able dict -> checkpoint
    it.set_state(state)      # resumes at exactly the next batch

Training mode (split="train") repeats forever, reshuffles every epoch and
draws flips per example, all as pure functions of (seed, epoch, index), so
a restored state gives the same batches bit for bit. Finite mode (every
other split, or finite=True) reads once, in order, never drops: the last
batch is padded and batches carry "mask" (bool, False on padding), and all
processes yield the same number of batches.

Which data sets exist, and how each is read, lives in `kflow_jax.data`.
"""
import math

from absl import flags
import grain
import numpy as np

from kflow_jax import data
from kflow_jax.config_lib import sections
from kflow_jax.data import captions as captions_lib
from kflow_jax.data.base import DatasetInfo
from kflow_jax.data.base import PaddedSource

__all__ = ["DatasetInfo", "create", "get_info",
           "latent_decoder", "epoch_images"]


def _check_keys(cfg):
  """Rejects unknown keys (a typo would silently fall back to a default)
  and missing ones (every default lives in config_lib, nowhere else)."""
  valid = set(sections.input_defaults().keys())
  unknown = sorted(set(cfg.keys()) - valid)
  if unknown:
    raise ValueError(
        f"unknown config.input keys {unknown}; valid keys: {sorted(valid)} "
        "(see kflow_jax/config_lib/sections.py, input_defaults).")
  missing = sorted(valid - set(cfg.keys()))
  if missing:
    raise ValueError(
        f"config.input lacks the keys {missing}: start from "
        "config_lib.base().input (every key with its default) and change "
        "the keys you need.")


def _split_name(cfg, split: str) -> str:
  if split == "train":
    return cfg.split
  if split == "eval":
    return cfg.eval_split
  if not isinstance(split, str) or not split:
    raise ValueError(
        f"split must be 'train', 'eval' or a data set split name, got "
        f"{split!r}.")
  return split


def get_info(config_input, split: str = "train") -> DatasetInfo:
  """DatasetInfo(shape=(H, W, C), num_classes, num_examples), cheaply.

  Args:
    config_input: config.input.
    split: "train" (config.input.split), "eval" (config.input.eval_split)
      or a split name of the data set.
  """
  _check_keys(config_input)
  family = data.get(config_input.name)
  return family.info(config_input, _split_name(config_input, split))


def _seeds(seed: int):
  """Independent 32-bit seeds for shuffling and per-example randomness."""
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
  shuffle_seed, map_seed = np.random.SeedSequence(int(seed)).generate_state(2)
  return int(shuffle_seed), int(map_seed)


def create(config_input, *, global_batch_size: int, seed: int,
           process_index: int = 0, process_count: int = 1,
           split: str = "train", finite=None):
  """Returns this process's batch iterator (grain DatasetIterator).

  Args:
    config_input: config.input (keys: config_lib.sections.input_defaults).
    global_batch_size: batch over all processes; must divide by
      process_count. Each process yields global_batch_size // process_count.
    seed: drives shuffling and per-example randomness (flips, latent noise).
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()). In training
      mode process i yields its slice of every global batch of one global
      order, so the global batches do not depend on the process count; in
      finite mode process i reads examples i, i + P, i + 2P, ...
    split: "train" (config.input.split), "eval" (config.input.eval_split) or
      a split name of the data set.
    finite: None: training mode for split="train", finite mode otherwise.
      True forces one ordered, padded pass (e.g. to encode the train split);
      False forces training mode.

  Returns:
    An iterator of dicts {"image": float32 [local_batch, H, W, C],
    "label": int32 [local_batch]} (plus "mask": bool [local_batch] in finite
    mode, and "caption": int32 [local_batch, L] with config.input.captions,
    data/captions.py) with get_state() / set_state(state); the state is a
    small dict of ints, JSON-serialisable.
  """
  _check_keys(config_input)
  global_batch_size = int(global_batch_size)
  if global_batch_size < 1:
    raise ValueError(
        f"global_batch_size must be positive, got {global_batch_size}.")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"need 0 <= process_index < process_count, got process_index="
        f"{process_index}, process_count={process_count}.")
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by "
        f"process_count={process_count}; use a multiple of {process_count}.")
  local_batch = global_batch_size // process_count
  train = (split == "train") if finite is None else not finite
  family = data.get(config_input.name)
  prepared = family.prepare(config_input, _split_name(config_input, split),
                            train)
  if config_input.captions:
    # Token condition slots: each record's caption, a pure function of
    # (caption_seed, its index in the split, its label).
    captions_lib.check(config_input)
    prepared = prepared._replace(
        source=captions_lib.CaptionedSource(
            prepared.source, captions_lib.get(config_input.captions),
            int(config_input.caption_seed)),
        transform=captions_lib.WithCaption(prepared.transform))
  num_examples = len(prepared.source)
  if num_examples == 0:
    raise ValueError(
        f"data set {config_input.name!r} split {split!r} is empty.")
  shuffle_seed, map_seed = _seeds(seed)

  if train:
    ds = grain.MapDataset.source(prepared.source)
    if config_input.shuffle:
      # Shuffle before repeat: grain reseeds every epoch (seed + epoch), so
      # each epoch has its own order, deterministic from the seed.
      ds = ds.shuffle(seed=shuffle_seed)
    ds = ds.repeat(None)
    # Per-example randomness is keyed by the global example index, and the
    # stream is cut into local-size chunks of which process i takes chunks
    # i, i + P, ...: global batch b is chunks bP .. bP + P - 1 in process
    # order, i.e. examples bG .. bG + G - 1 of one global order. So the
    # global batches, and hence the run, do not depend on the process count.
    ds = ds.random_map(prepared.transform, seed=map_seed)
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds[process_index::process_count]
  else:
    per_process = math.ceil(num_examples / process_count)
    length = math.ceil(per_process / local_batch) * local_batch
    ds = grain.MapDataset.source(
        PaddedSource(prepared.source, process_index, process_count, length))
    ds = ds.random_map(prepared.transform, seed=map_seed)
    ds = ds.batch(local_batch, drop_remainder=False)

  num_threads = int(config_input.num_threads)
  prefetch = int(config_input.prefetch_batches)
  if num_threads < 0 or prefetch < 0:
    raise ValueError(
        "config.input.num_threads and prefetch_batches must be >= 0.")
  it_ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch))
  num_workers = int(config_input.num_workers)
  if num_workers < 0:
    raise ValueError(
        f"config.input.num_workers must be >= 0 (0 = in-process), got "
        f"{num_workers}.")
  if num_workers > 0:
    # grain's workers read absl flags; outside app.run (notebooks, pytest)
    # they are unparsed and grain would fail, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=max(prefetch, 1)))
  return iter(it_ds)


def epoch_images(config_input, *, batch_size: int = 256, seed: int = 0):
  """Yields the training split once as image batches [B, H, W, C], padding
  removed: one streaming pass for statistics fitted on data (the PCA
  basis), identical on every process."""
  it = create(config_input, global_batch_size=batch_size, seed=seed,
              process_index=0, process_count=1, split="train", finite=True)
  for batch in it:
    images = np.asarray(batch["image"])
    if "mask" in batch:
      images = images[np.asarray(batch["mask"], bool)]
    yield images


def latent_decoder(config_input):
  """None for pixel data; for name="latents" a jitted function mapping
  generated (scaled) latents [B, h, w, c] to images [B, H, W, 3] in about
  [-1, 1], with the VAE the latents were encoded with."""
  _check_keys(config_input)
  from kflow_jax.data import latents  # pylint: disable=g-import-not-at-top
  return latents.make_decoder(config_input)
