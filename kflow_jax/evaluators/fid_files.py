"""FID reference batches and sample batches on disk, in ADM's .npz layout.

Reference statistics are .npz files with ADM's key names (mu, sigma, mu_s,
sigma_s, optional arr_0 images), so ADM's VIRTUAL_*.npz reference batches
load directly and our files work with the ADM evaluator. Files written by
tools/fid_reference add meta_protocol, meta_weights_sha256 and
meta_source (ADM's evaluator ignores them); `check_reference` refuses a
reference made under another protocol or with other Inception weights,
and one without a protocol (ADM's own files) under pytorch_fid.
`evaluators.fid` re-exports every public name here.
"""
import os
import zipfile
from typing import NamedTuple, Optional

import numpy as np

from kflow_jax.evaluators import inception

_STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


class FeatureStats(NamedTuple):
  """Gaussian fits of pool3 (mu, sigma) and spatial (mu_s, sigma_s) features."""
  mu: np.ndarray
  sigma: np.ndarray
  mu_s: np.ndarray
  sigma_s: np.ndarray


class ReferenceBatch(NamedTuple):
  """An ADM reference batch: statistics and (optionally) its uint8 images."""
  stats: FeatureStats
  images: Optional[np.ndarray]  # arr_0, uint8 [N, H, W, 3], or None


def save_reference(path: str, stats: FeatureStats, images=None):
  """Writes stats (and optionally uint8 images as arr_0) in ADM's layout."""
  arrays = {k: np.asarray(v, np.float64) for k, v in stats._asdict().items()}
  if images is not None:
    arrays["arr_0"] = np.asarray(images, np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **arrays)


def _open_npz(path: str):
  if not os.path.isfile(path):
    raise ValueError(f"no reference batch at {path!r}.")
  if not zipfile.is_zipfile(path):
    raise ValueError(
        f"{path} is not an .npz file; a reference batch is the .npz of "
        "ADM's VIRTUAL_*.npz or of save_reference (keys mu, sigma, mu_s, "
        "sigma_s, optional arr_0).")
  return np.load(path, allow_pickle=False)


def _check_stats(stats: FeatureStats, path: str):
  for mu, sigma, what in ((stats.mu, stats.sigma, "mu/sigma"),
                          (stats.mu_s, stats.sigma_s, "mu_s/sigma_s")):
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
      raise ValueError(f"{path}: {what} have shapes {mu.shape} and "
                       f"{sigma.shape}, not [D] and [D, D].")
  if stats.mu.size != inception.POOL_DIM:
    raise ValueError(f"{path}: mu has {stats.mu.size} dims, not the "
                     f"{inception.POOL_DIM} of Inception pool3.")


def load_reference(path: str, load_images: bool = False) -> ReferenceBatch:
  """Reads an ADM reference batch or a save_reference file.

  load_images: also read arr_0 (needed for precision/recall; 10k images of
  256 px are about 2 GB).
  """
  with _open_npz(path) as npz:
    keys = set(npz.files)
    missing = [k for k in _STAT_KEYS if k not in keys]
    if missing:
      kind = ("a sample batch (arr_0 images only)" if "arr_0" in keys
              else "not a reference batch")
      raise ValueError(
          f"{path} has keys {sorted(keys)}, missing {missing}: it is {kind}. "
          "A reference batch holds precomputed mu, sigma, mu_s, sigma_s "
          "(ADM's VIRTUAL_*.npz or save_reference); for a sample batch use "
          "load_sample_batch and compute its features.")
    stats = FeatureStats(*(np.asarray(npz[k], np.float64)
                           for k in _STAT_KEYS))
    _check_stats(stats, path)
    images = None
    if load_images:
      if "arr_0" not in keys:
        raise ValueError(f"{path} holds no reference images (arr_0); "
                         "precision/recall need them.")
      images = _check_images(npz["arr_0"], path)
  return ReferenceBatch(stats, images)


def _check_images(images, path):
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{path}: arr_0 is {images.dtype} {images.shape}, not "
                     "uint8 [N, H, W, 3] images.")
  return images


def load_sample_batch(path: str) -> np.ndarray:
  """arr_0 of an ADM-style sample batch (np.savez(path, images[, labels]))."""
  with _open_npz(path) as npz:
    if "arr_0" not in npz.files:
      raise ValueError(f"{path} has keys {sorted(npz.files)} but no arr_0 "
                       "images; it is not a sample batch.")
    return _check_images(npz["arr_0"], path)


# Keys tools/fid_reference adds beside ADM's (mu, sigma, mu_s, sigma_s,
# arr_0); ADM's evaluator ignores them.
META_PROTOCOL = "meta_protocol"
META_WEIGHTS = "meta_weights_sha256"
META_SOURCE = "meta_source"


def reference_meta(path: str) -> dict:
  """{protocol, weights_sha256, source} recorded in a reference file by
  tools/fid_reference (absent keys: an ADM reference batch)."""
  with np.load(path, allow_pickle=False) as npz:
    return {k[len("meta_"):]: str(npz[k]) for k in
            (META_PROTOCOL, META_WEIGHTS, META_SOURCE) if k in npz.files}


def check_reference(path: str, protocol: str,
                    weights_sha256: Optional[str]) -> dict:
  """The reference's metadata; refuses one made under another protocol or
  with other Inception weights (the FID would be meaningless).

  A file without a recorded protocol is an ADM reference batch (ADM's
  VIRTUAL_*.npz carry none): its statistics come from ADM's TF pipeline,
  so it is accepted under protocol "adm" only. weights_sha256: the sha256
  of the weights scored with (None: not checked, e.g. variables passed in
  memory).
  """
  load_reference(path)  # raises a clear error for a wrong kind of file
  meta = reference_meta(path)
  made = meta.get("protocol")
  if made is None and protocol != "adm":
    raise ValueError(
        f"the FID reference {path} records no protocol (as ADM's "
        "VIRTUAL_*.npz reference batches, made by ADM's TF evaluator), so "
        f"it cannot be scored under protocol {protocol!r}: pass protocol "
        "'adm' (--config.evals.protocol=adm) to compare with ADM's "
        "statistics, or rebuild the reference with python -m "
        f"kflow_jax.tools.fid_reference --protocol={protocol}.")
  if made is not None and made != protocol:
    raise ValueError(
        f"the FID reference {path} was computed with protocol {made!r}, but "
        f"config.evals.protocol is {protocol!r}; set "
        f"--config.evals.protocol={made} or rebuild the reference with "
        f"python -m kflow_jax.tools.fid_reference --protocol={protocol}.")
  w = meta.get("weights_sha256")
  if w is not None and weights_sha256 is not None and w != weights_sha256:
    raise ValueError(
        f"the FID reference {path} was computed with Inception weights of "
        f"sha256 {w[:12]}..., these are {weights_sha256[:12]}...; rebuild "
        "the reference with the weights you score with.")
  return meta
