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
ADM evaluator (reading and writing them: evaluators/fid_files.py, whose
names are re-exported here). Statistics and distances are float64 numpy
on the host; features and k-NN distances are computed with JAX.

One call from images, or from a sample set of --mode=sample, to FID:

    fid.fid_from_images(images, "ref.npz", weights="pt_inception.pth")
    fid.fid_from_sample_set("WORKDIR/sample_mode/<tag>", "ref.npz")

The same number step by step (and sFID, IS, precision/recall):

    variables = inception.load_pytorch_fid_weights()   # no torch needed
    fn = fid.feature_fn(variables, "adm")              # or "pytorch_fid"
    feats = fid.extract_features(fn, fid.load_sample_batch(samples_npz))
    ref = fid.load_reference(ref_npz, load_images=True)
    ref_pool = fid.extract_features(fn, ref.images)["pool"]
    metrics = fid.evaluate(feats, ref.stats, ref_pool)
"""
import functools
import os
from typing import Callable, Dict, Iterable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from kflow_jax.evaluators import fid_files
from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import inception
from kflow_jax.evaluators import preprocess
from kflow_jax.generate import files
from kflow_jax.generate import sample_set

# Reference and sample batches on disk (fid_files), re-exported.
FeatureStats = fid_files.FeatureStats
ReferenceBatch = fid_files.ReferenceBatch
save_reference = fid_files.save_reference
load_reference = fid_files.load_reference
load_sample_batch = fid_files.load_sample_batch
reference_meta = fid_files.reference_meta
check_reference = fid_files.check_reference


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
  return functools.partial(_features, variables, protocol=protocol)


@functools.partial(jax.jit, static_argnames="protocol")
def _features(variables, images, protocol):
  # One module-level jit: every feature_fn of a protocol shares its
  # compilations (the weights are an argument, not constants).
  return inception.InceptionV3().apply(
      variables, preprocess.preprocess(images, protocol))


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



# ---------------------------------------------------------------------------
# One call: images (or a sample set) and a reference -> FID.

def quantize(images, protocol: str = "pytorch_fid") -> np.ndarray:
  """[-1, 1] float samples -> uint8 [N, H, W, C] as the protocol's pipeline
  makes them ("adm" truncates like ADM's sampler, "pytorch_fid" rounds;
  preprocess.QUANTIZATION). uint8 images are kept as they are."""
  if protocol not in preprocess.PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; use one of "
                     f"{preprocess.PROTOCOLS}.")
  return files.to_uint8(
      images, truncate=preprocess.QUANTIZATION[protocol] == "truncate")


def _weights(weights, check_hash: bool):
  """(variables, sha256 of the weights file, or None for variables)."""
  if isinstance(weights, Mapping):  # variables (a dict or a FrozenDict)
    return weights, None
  path = (os.path.expanduser(str(weights)) if weights
          else inception.default_weights_path())
  variables = inception.load_pytorch_fid_weights(path, check_hash=check_hash)
  return variables, inception.sha256_prefix(path, 64)


def _batches(images, protocol):
  if hasattr(images, "shape"):
    return quantize(images, protocol)
  return (quantize(b, protocol) for b in images)


def reference_statistics(reference, fn: Callable, protocol: str,
                         weights_sha256: Optional[str] = None,
                         batch_size: int = 50) -> FeatureStats:
  """FeatureStats of a reference: a reference .npz path (checked with
  check_reference), FeatureStats, a ReferenceBatch, or images (uint8, or
  [-1, 1] floats) whose features `fn` computes."""
  if isinstance(reference, (str, os.PathLike)):
    path = os.path.expanduser(os.fspath(reference))
    check_reference(path, protocol, weights_sha256)
    return load_reference(path).stats
  if isinstance(reference, ReferenceBatch):
    return reference.stats
  if isinstance(reference, FeatureStats):
    return reference
  return feature_statistics(extract_features(
      fn, _batches(reference, protocol), batch_size=batch_size))


def fid_from_images(images, reference,
                    weights: Union[str, dict, None] = None, *,
                    protocol: str = "pytorch_fid", check_hash: bool = True,
                    batch_size: int = 50) -> float:
  """FID of images against a reference, in one call.

  Args:
    images: uint8 [N, H, W, C] (C 1 or 3), or float samples in [-1, 1]
      (quantised for the protocol, see `quantize`), or an iterable of such
      batches.
    reference: a reference .npz (tools/fid_reference, or ADM's
      VIRTUAL_*.npz under protocol "adm"), FeatureStats, a ReferenceBatch,
      or reference images (as `images`).
    weights: pytorch-fid's .pth path (None: $KFLOW_INCEPTION_WEIGHTS, else
      ~/.cache/kflow_jax/pt_inception-2015-12-05-6726825d.pth), or
      variables already loaded.
    protocol: "pytorch_fid" or "adm" (evaluators/preprocess.py).
    check_hash: the weights file's sha256 check (off for converted or test
      weights, see inception.load_pytorch_fid_weights).
    batch_size: Inception batch size (memory only).
  """
  variables, wsha = _weights(weights, check_hash)
  fn = feature_fn(variables, protocol)
  ref = reference_statistics(reference, fn, protocol, wsha, batch_size)
  feats = extract_features(fn, _batches(images, protocol),
                           batch_size=batch_size)
  return fid(feature_statistics(feats), ref)


def check_quantization(directory: str, protocol: str):
  """Refuses to score under `protocol` a sample set of --mode=sample
  quantised otherwise (samples.json's "quantization", default "round")."""
  made, want = (sample_set.quantization_of(directory),
                preprocess.QUANTIZATION[protocol])
  if made != want:
    raise ValueError(
        f"the sample set {directory} was quantised by {made!r}, but FID "
        f"protocol {protocol!r} quantises by {want!r} (as its published "
        f"pipeline does); sample it with --config.evals.protocol={protocol} "
        "(--mode=sample, or --mode=eval without evals.samples).")


def fid_from_sample_set(directory: str, reference,
                        weights: Union[str, dict, None] = None, *,
                        num_samples: Optional[int] = None,
                        protocol: str = "pytorch_fid", **kwargs) -> float:
  """fid_from_images of a sample set written by --mode=sample (its
  chunk_*.npz, read one chunk at a time; the first num_samples, None: all).
  A set must be quantised as the protocol's pipeline does (sets are
  rounded unless sampled with --config.evals.protocol=adm)."""
  check_quantization(directory, protocol)
  chunks = (c["images"] for c in sample_set.iter_chunks(directory,
                                                        num_samples))
  return fid_from_images(chunks, reference, weights, protocol=protocol,
                         **kwargs)
