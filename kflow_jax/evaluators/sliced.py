"""Sliced Wasserstein distance between image sets in pixel space.

  SW_p(X, Y)^p = E_theta W_p(<theta, X>, <theta, Y>)^p,  theta ~ U(sphere)

estimated with L random unit directions. Each 1-D W_p is exact for the two
empirical distributions, of equal or unequal sizes: between consecutive
breakpoints of both quantile functions (levels i/N and j/M) both are
constant, so W_p^p = sum over those intervals of length * |q_X - q_Y|^p.
With N = M this is the mean of |sorted x - sorted y|^p.

It needs no features at all, so it complements the feature distances: it
sees every pixel, but in high dimension its value is dominated by the
coarse structure carrying most of the pixel variance.
"""
import jax
import numpy as np

from kflow_jax.evaluators import validate


def directions(rng, dim: int, num_projections: int) -> np.ndarray:
  """float64 [dim, L] unit columns drawn from the jax PRNG key rng."""
  if int(num_projections) < 1:
    raise ValueError(
        f"num_projections must be >= 1, got {num_projections}.")
  v = np.asarray(jax.random.normal(rng, (int(dim), int(num_projections))),
                 np.float64)
  return v / np.linalg.norm(v, axis=0, keepdims=True)


def wasserstein_1d(x, y, p: float = 2.0) -> np.ndarray:
  """W_p between the empirical distributions of the columns: [L].

  Args:
    x: [N, L] samples of L 1-D distributions.
    y: [M, L] samples of the same L distributions (M may differ from N).
    p: order >= 1.
  """
  x = np.sort(np.asarray(x, np.float64), axis=0)
  y = np.sort(np.asarray(y, np.float64), axis=0)
  n, m = x.shape[0], y.shape[0]
  # Breakpoints of both quantile functions; midpoints pick the constant
  # piece of each (floor(t * n) is the index of the quantile at level t).
  levels = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
  lengths = np.diff(levels, prepend=0.0)
  mid = levels - lengths / 2
  ix = np.minimum((mid * n).astype(np.int64), n - 1)
  iy = np.minimum((mid * m).astype(np.int64), m - 1)
  cost = np.abs(x[ix] - y[iy]) ** p  # [K, L]
  return (lengths @ cost) ** (1.0 / p)


def sliced_wasserstein(samples, reference, rng, *, num_projections: int = 256,
                       p: float = 2.0) -> float:
  """SW_p between two image sets [N, H, W, C] and [M, H, W, C].

  Args:
    samples: float [N, H, W, C] in [-1, 1].
    reference: float [M, H, W, C] (the same H, W, C; M may differ from N).
    rng: jax PRNG key for the directions; the same key gives the same
      directions, so pass one fixed key to compare runs.
    num_projections: L, the number of random directions.
    p: 1 or 2 (any p >= 1 works): W_1 or W_2 per direction.

  Returns:
    (mean over directions of W_p^p)^(1/p), in pixel units of [-1, 1].
  """
  if float(p) < 1.0:
    raise ValueError(f"p must be >= 1 (a Wasserstein order), got {p}.")
  a = validate.images(samples, "samples")
  b = validate.images(reference, "reference")
  validate.same_image_shape(a, b)
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  theta = directions(rng, a.shape[1], num_projections)
  w = wasserstein_1d(a @ theta, b @ theta, p)
  return float(np.mean(w ** p) ** (1.0 / p))
