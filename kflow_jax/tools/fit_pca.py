"""Fits the PCA basis of the `pca` K-amplitude transform from a data set.

  python -m kflow_jax.tools.fit_pca --config=configs/patches.py:transform=pca \
      --out=/tmp/basis.npz [--patch=8] [--max_examples=10000]

One streaming pass over the training split (finite mode of the input
pipeline, so every example is read once and padding is masked out): the
float64 second-moment matrix is accumulated batch by batch
(`kamp.pca.fit_basis`), never holding the data set in memory. The .npz
records the shape and patch it was fitted for; `kamp.get("pca", shape,
basis=path)` checks them on load.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from kflow_jax.data import input_pipeline
from kflow_jax.kamp import pca

def array_batches(images, batch_size=256):
  """Yields [batch_size, H, W, C] slices of an in-memory array."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(
        f"images must be [N, H, W, C], got shape {images.shape}.")
  for start in range(0, images.shape[0], batch_size):
    yield images[start:start + batch_size]


def fit_and_save(data, out, *, patch=None, max_examples=None,
                 batch_size=256):
  """Fits a basis on an array [N, H, W, C] or an iterable of batches and
  writes it to `out` (.npz). Returns the `kamp.pca.fit_basis` result."""
  batches = array_batches(data, batch_size) if isinstance(
      data, np.ndarray) else data
  fitted = pca.fit_basis(batches, patch=patch, max_examples=max_examples)
  pca.save_basis(out, fitted)
  return fitted


config_flags.DEFINE_config_file("config", None, "Experiment config file.")
flags.DEFINE_string("out", None, "Output .npz path.")
flags.DEFINE_integer(
    "patch", None, "Patch size p for patch PCA; default: "
    "config.transform.patch if set, else full PCA.")
flags.DEFINE_integer("batch_size", 256, "Examples per batch read.")
flags.DEFINE_integer(
    "max_examples", None, "Stop after this many examples (default: the "
    "whole training split, one pass).")
flags.DEFINE_integer("seed", 0, "Seed of the input pipeline.")


def main(argv):
  del argv
  f = flags.FLAGS
  cfg = f.config
  # patch is an option of the pca transform only (kamp/pca.py has its
  # default), so other transforms' configs lack it.
  patch = f.patch if f.patch is not None else cfg.transform.get("patch")
  fitted = fit_and_save(
      input_pipeline.epoch_images(cfg.input, batch_size=f.batch_size,
                                  seed=f.seed),
      f.out, patch=patch, max_examples=f.max_examples)
  ev = fitted["eigenvalues"]
  top = np.cumsum(ev) / max(ev.sum(), 1e-30)
  logging.info(
      "PCA basis %s: shape %s, patch %s, %d examples, D = %d; top 10%% of "
      "directions hold %.1f%% of the energy.", f.out, fitted["shape"],
      fitted["patch"] or None, fitted["count"], ev.size,
      100 * top[max(ev.size // 10 - 1, 0)])
  print(f"wrote {f.out}: shape {fitted['shape']}, patch "
        f"{fitted['patch'] or None}, {fitted['count']} examples")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
