"""Gaussian statistics of feature sets and the Frechet distance between them.

The one place every Frechet metric (FID, sFID, the classifier FD of the
download-free metrics) computes its number, in float64 on the host:

  FD = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

The matrix square root is scipy's `linalg.sqrtm`; when the product is
near-singular (fewer samples than feature dimensions) a small multiple of
the identity is added to both covariances first, the same safeguard
pytorch-fid uses, so our numbers stay comparable with it.
"""
from typing import NamedTuple

import numpy as np
from scipy import linalg


class Stats(NamedTuple):
  """mu [D] and sigma [D, D], float64."""
  mu: np.ndarray
  sigma: np.ndarray


def statistics(features) -> Stats:
  """Mean and unbiased covariance (ddof=1) of features [N, D], float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(
        f"features must be [N, D] with N >= 2 samples, got shape {f.shape}.")
  return Stats(f.mean(axis=0), np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(
      np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(
      np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (
      mu1.size, mu1.size):
    raise ValueError(
        f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma "
        f"{s1.shape} vs {s2.shape}; both sets need features of the same "
        "extractor and dimension.")
  diff = mu1 - mu2
  # No disp=False: scipy deprecated it in 1.16 and drops it in 1.18; the
  # default returns the same matrix on every version.
  covmean = linalg.sqrtm(s1.dot(s2))
  if not np.isfinite(covmean).all():
    offset = np.eye(s1.shape[0]) * eps
    covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
  if np.iscomplexobj(covmean):
    # Round-off gives a tiny imaginary part; a large one means the inputs
    # are not covariance matrices.
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(
          "sqrt(sigma1 sigma2) has a large imaginary component "
          f"({np.max(np.abs(covmean.imag)):.3g}); the covariances are not "
          "positive semi-definite.")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(s1) + np.trace(s2)
               - 2.0 * np.trace(covmean))


def frechet_from_features(f1, f2) -> float:
  """Frechet distance between the Gaussian fits of two feature sets."""
  a, b = statistics(f1), statistics(f2)
  return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
