"""FID Inception features of image batches, sharded over a run's mesh.

    fn, batch = sharded_features.feature_fn(variables, "pytorch_fid", mesh)
    feats = fid.extract_features(fn, images_uint8, batch_size=batch)

Every batch is split over all devices along its first axis
(sharding.batch_sharding), the network is replicated, and the outputs are
gathered back to the host as numpy (all hosts' shards on every host). Every
process must call it with the same images (they read the same sample set
and reference), so no host needs another's data. Statistics are then float64
numpy (`fid.feature_statistics`).
"""
import functools
import hashlib
import os
from typing import Callable, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import numpy as np

from kflow_jax.infra import sharding
from kflow_jax.evaluators import fid_files
from kflow_jax.evaluators import inception
from kflow_jax.evaluators import preprocess


def host_array(x) -> np.ndarray:
  """A global (possibly multi-host) array as one numpy array."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def feature_fn(variables, protocol: str, mesh,
               batch_size: int = 50) -> Tuple[Callable, int]:
  """(fn(images [B, H, W, C]) -> {name: numpy [B, ...]}, B).

  B is batch_size rounded up to a multiple of the device count, so every
  device gets the same share; pass it to fid.extract_features, which pads
  the last batch to B.
  """
  if protocol not in preprocess.PROTOCOLS:
    raise ValueError(f"unknown FID protocol {protocol!r}; use one of "
                     f"{preprocess.PROTOCOLS} (config.evals.protocol).")
  model = inception.InceptionV3()
  rep, bsh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  variables = jax.device_put(variables, rep)
  b = -(-max(int(batch_size), 1) // mesh.size) * mesh.size

  @functools.partial(jax.jit, in_shardings=(rep, bsh), out_shardings=bsh)
  def apply(v, images):
    return model.apply(v, preprocess.preprocess(images, protocol))

  def fn(images):
    x = np.asarray(images)
    arr = jax.make_array_from_callback(x.shape, bsh, lambda idx: x[idx])
    return {k: host_array(v) for k, v in apply(variables, arr).items()}
  return fn, b


def sha256(path: str) -> str:
  """Hex sha256 of a file (recorded next to every metric it produced)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def load_weights(path: Optional[str], check_hash: bool = True):
  """(variables, resolved path) of pytorch-fid's Inception weights; a
  ValueError saying where to get them when the file is missing."""
  path = os.path.expanduser(path) if path else (
      inception.default_weights_path())
  return inception.load_pytorch_fid_weights(path, check_hash=check_hash), path


# The reference file's provenance keys and their check live in fid_files
# (kept here under their old names).
META_PROTOCOL = fid_files.META_PROTOCOL
META_WEIGHTS = fid_files.META_WEIGHTS
META_SOURCE = fid_files.META_SOURCE
reference_meta = fid_files.reference_meta
check_reference = fid_files.check_reference
