"""FID, sFID, Inception Score and precision/recall from Inception features.

The metrics of the ADM evaluator (guided-diffusion evaluations/evaluator.py),
computed from the outputs of `inception.InceptionV3`:

  FID        Frechet distance of the pool3 (2048-d) Gaussians;
  sFID       the same on the 2023-d spatial features (Mixed_6d.branch1x1,
             first 7 channels, NHWC-flattened);
  IS         exp(E KL(p(y|x) || p(y))) over 1008 classes from the unbiased
             logits, in consecutive splits of 5000 images (10 for 50k),
             averaged;
  precision / recall  Kynkaanniemi et al. (2019) with k = 3 on pool3:
             precision = share of samples inside some reference point's
             k-NN ball, recall = share of reference points inside some
             sample's ball; balls are closed, radii squared Euclidean.

Reference statistics are .npz files with ADM's key names (mu, sigma, mu_s,
sigma_s), so ADM's VIRTUAL_*.npz reference batches (which add the 10k
reference images as arr_0) load directly, and our own files work with the
ADM evaluator. Statistics and distances are float64 numpy on the host;
features and k-NN distances are computed with JAX.

    variables = inception.load_pytorch_fid_weights()   # no torch needed
    fn = fid.feature_fn(variables, "adm")              # or "pytorch_fid"
    feats = fid.extract_features(fn, fid.load_sample_batch(samples_npz))
    ref = fid.load_reference(ref_npz, load_images=True)
    ref_pool = fid.extract_features(fn, ref.images)["pool"]
    metrics = fid.evaluate(feats, ref.stats, ref_pool)
"""
import functools
import os
import zipfile
from typing import Callable, Dict, Iterable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import inception
from kflow_jax.evaluators import preprocess

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


# ---------------------------------------------------------------------------
# Features.

def feature_fn(variables, protocol: str = "pytorch_fid") -> Callable:
  """Jitted images -> {'pool', 'spatial', 'logits', 'logits_unbiased'}.

  The images are uint8 [N, H, W, C] (or floats in the protocol's range, see
  preprocess.preprocess); every batch shape compiles once.
  """
  if protocol not in preprocess.PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; use one of "
                     f"{preprocess.PROTOCOLS}.")
  model = inception.InceptionV3()

  @jax.jit
  def apply(variables, images):
    return model.apply(variables, preprocess.preprocess(images, protocol))

  return functools.partial(apply, variables)


def _rechunk(images: Iterable, batch_size: int):
  """Re-chunks an iterable of image batches into batches of batch_size."""
  buf, size = [], 0
  for batch in images:
    batch, start = np.asarray(batch), 0
    if size:  # top up the partial batch first
      start = min(batch_size - size, len(batch))
      buf.append(batch[:start])
      size += start
      if size == batch_size:
        yield np.concatenate(buf)
        buf, size = [], 0
    while len(batch) - start >= batch_size:  # slices, no copies
      yield batch[start:start + batch_size]
      start += batch_size
    if start < len(batch):
      buf, size = [batch[start:]], len(batch) - start
  if size:
    yield np.concatenate(buf)


def extract_features(fn: Callable, images, batch_size: int = 50,
                     protocol: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Runs `fn` (from feature_fn) over all images; returns numpy features.

  images: an array [N, H, W, C] or an iterable of such batches. Every image
  is used (no drop_last, unlike some ports): a short last batch is padded
  to `batch_size` so it reuses the compiled shape, and the padding dropped.
  protocol: when given, float inputs are range-checked for it first.
  """
  if hasattr(images, "shape"):
    images = [images]
  batches = _rechunk(images, batch_size)
  out = {}
  for batch in batches:
    batch = np.asarray(batch)
    if protocol is not None:
      preprocess.check_range(batch, protocol)
    n = len(batch)
    if n < batch_size:
      pad = np.repeat(batch[-1:], batch_size - n, axis=0)
      batch = np.concatenate([batch, pad])
    for k, v in jax.device_get(fn(batch)).items():
      out.setdefault(k, []).append(np.asarray(v[:n]))
  if not out:
    raise ValueError("no images to extract features from.")
  return {k: np.concatenate(v) for k, v in out.items()}


def feature_statistics(features: Dict[str, np.ndarray]) -> FeatureStats:
  """FeatureStats of extract_features' output (float64, ddof=1)."""
  pool = frechet.statistics(features["pool"])
  spatial = frechet.statistics(features["spatial"])
  return FeatureStats(pool.mu, pool.sigma, spatial.mu, spatial.sigma)


# ---------------------------------------------------------------------------
# FID and sFID.

def fid(a: FeatureStats, b: FeatureStats) -> float:
  return frechet.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def sfid(a: FeatureStats, b: FeatureStats) -> float:
  return frechet.frechet_distance(a.mu_s, a.sigma_s, b.mu_s, b.sigma_s)


# ---------------------------------------------------------------------------
# Inception Score.

def inception_score_splits(logits, split_size: int = 5000,
                           num_splits: Optional[int] = None) -> np.ndarray:
  """Per-split Inception Scores of logits [N, C] (float64).

  Default: ADM's consecutive splits of `split_size` (the last may be
  shorter). num_splits: instead cut N into that many near-equal consecutive
  parts (improved-GAN / torch-fidelity style; the same for N = 50k).
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or len(logits) == 0:
    raise ValueError(f"logits must be [N, C] with N >= 1, got shape "
                     f"{logits.shape}.")
  n = len(logits)
  if num_splits is not None:
    if not 1 <= num_splits <= n:
      raise ValueError(f"num_splits must be in [1, {n}], got {num_splits}.")
    edges = np.linspace(0, n, num_splits + 1).round().astype(int)
  else:
    edges = np.append(np.arange(0, n, split_size), n)
  scores = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    # log-space: softmax probabilities underflow to 0 and 0 * log 0 = nan.
    logp = special.log_softmax(logits[lo:hi], axis=1)
    log_marginal = special.logsumexp(logp, axis=0) - np.log(hi - lo)
    kl = np.sum(np.exp(logp) * (logp - log_marginal), axis=1)
    scores.append(np.exp(kl.mean()))
  return np.asarray(scores)


def inception_score(logits, split_size: int = 5000,
                    num_splits: Optional[int] = None) -> float:
  """Mean over splits of exp(E_x KL(p(y|x) || p(y))); ADM's number."""
  return float(np.mean(inception_score_splits(logits, split_size,
                                              num_splits)))


# ---------------------------------------------------------------------------
# Precision and recall (k-NN manifolds).

@jax.jit
def _sq_dists(a, b):
  # |a|^2 - 2 a.b + |b|^2 like ADM's DistanceBlock, clamped at 0 against
  # round-off; full float32 matmul (no TF32/bf16 passes on accelerators).
  ab = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  d = jnp.sum(a * a, 1)[:, None] - 2 * ab + jnp.sum(b * b, 1)[None, :]
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_nearest(rows, points, k):
  # k+1 smallest include the point itself (distance 0): ADM's radii.
  neg, _ = jax.lax.top_k(-_sq_dists(rows, points), k + 1)
  return -neg[:, k]


@jax.jit
def _inside_any(rows, points, radii):
  return jnp.any(_sq_dists(rows, points) <= radii[None, :], axis=1)


def _row_batches(x, batch_size, fn):
  # Fixed-size row blocks (the last padded) so each function compiles once.
  out = []
  for i in range(0, len(x), batch_size):
    rows = x[i:i + batch_size]
    n = len(rows)
    if n < batch_size and len(x) > batch_size:
      rows = np.concatenate([rows, np.repeat(rows[-1:], batch_size - n, 0)])
    out.append(np.asarray(fn(rows))[:n])
  return np.concatenate(out)


def knn_radii(features, k: int = 3, batch_size: int = 2048) -> np.ndarray:
  """Squared distance of each point to its k-th nearest other point."""
  f = jnp.asarray(features, jnp.float32)
  if len(f) <= k:
    raise ValueError(f"need more than k={k} points for k-NN radii, got "
                     f"{len(f)}.")
  return _row_batches(np.asarray(f), batch_size,
                      lambda rows: _kth_nearest(rows, f, k))


def precision_recall(ref_features, sample_features, k: int = 3,
                     batch_size: int = 2048):
  """(precision, recall) of samples against a reference set, ADM-style.

  Distances are float32 (ADM uses float16, so expect differences in the
  4th decimal); both sets are centred on the reference mean first, which
  changes no distance but keeps |a|^2 - 2ab + |b|^2 from cancelling.
  """
  ref = np.asarray(ref_features, np.float64)
  smp = np.asarray(sample_features, np.float64)
  if ref.ndim != 2 or smp.ndim != 2 or ref.shape[1] != smp.shape[1]:
    raise ValueError(f"features must be [N, D] with the same D, got "
                     f"{ref.shape} and {smp.shape}.")
  centre = ref.mean(axis=0)
  ref = jnp.asarray(ref - centre, jnp.float32)
  smp = jnp.asarray(smp - centre, jnp.float32)
  ref_radii = jnp.asarray(knn_radii(ref, k, batch_size))
  smp_radii = jnp.asarray(knn_radii(smp, k, batch_size))
  precision = _row_batches(np.asarray(smp), batch_size,
                           lambda rows: _inside_any(rows, ref, ref_radii))
  recall = _row_batches(np.asarray(ref), batch_size,
                        lambda rows: _inside_any(rows, smp, smp_radii))
  return float(precision.mean()), float(recall.mean())


# ---------------------------------------------------------------------------
# Reference statistics and ADM .npz batches.

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


# ---------------------------------------------------------------------------
# Everything at once.

def evaluate(sample_features: Dict[str, np.ndarray],
             ref_stats: FeatureStats,
             ref_pool: Optional[np.ndarray] = None,
             split_size: int = 5000) -> Dict[str, float]:
  """ADM's metric set for samples against a reference.

  ref_pool: pool3 features of the reference images; precision/recall are
  only computed when given (ADM: 10k reference images vs the samples).
  """
  stats = feature_statistics(sample_features)
  out = {"fid": fid(stats, ref_stats), "sfid": sfid(stats, ref_stats),
         "inception_score": inception_score(
             sample_features["logits_unbiased"], split_size)}
  if ref_pool is not None:
    out["precision"], out["recall"] = precision_recall(
        ref_pool, sample_features["pool"])
  return out

