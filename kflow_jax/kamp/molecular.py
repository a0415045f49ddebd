"""The K-amplitude transform over the molecules of a cluster: graph-Fourier
bands of the source centroids (docs/method.md#graph-fourier-bands-over-molecules).

For a cluster of M rigid molecules with source centroids c_i (known at
sampling time), the graph with weights W_ij = exp(-|c_i - c_j|^2 / s^2)
(s the median centroid distance, W_ii = 0) has the Laplacian L = D - W and
the orthonormal eigenvectors U (eigenvalues 0 = l_0 <= ... <= l_{M-1}).
Eigenvector k is a field over the molecules: k = 0 is the constant (every
molecule moves alike), low k are collective motions, high k relative
motions of neighbours. Bands are groups of consecutive eigen-indices, and
only their projectors P_b = U_b U_b^T are used: they do not depend on the
eigenvectors' signs, nor on the basis chosen inside a repeated eigenvalue
as long as no band boundary cuts one (`band_projectors` moves such a cut to
the end of the repeated group). P_b acts on the molecule index of any
per-molecule field [M, d] (centroid displacements, rotation vectors), so
the bands are unchanged by rotating or translating the cluster and follow
a permutation of its molecules; sum_b P_b = I.
"""
from typing import Sequence

import numpy as np

# Relative eigenvalue gap below which two eigenvalues count as one.
DEGENERATE = 1e-6
# The proposal's bands for 17 molecules: {0}, {1..3}, {4..8}, {9..16}.
DEFAULT_STARTS = (0, 1, 4, 9)


def laplacian(centroids) -> np.ndarray:
  """[M, M] graph Laplacian of the Gaussian-weighted complete graph."""
  c = np.asarray(centroids, np.float64)
  if c.ndim != 2 or c.shape[1] != 3 or c.shape[0] < 2:
    raise ValueError(f"centroids must be [M, 3] with M >= 2, got {c.shape}.")
  d2 = np.sum(np.square(c[:, None] - c[None]), axis=-1)
  off = d2[~np.eye(len(c), dtype=bool)]
  s2 = float(np.median(off))
  if not s2 > 0:
    raise ValueError("the centroids coincide: no graph to build bands on.")
  w = np.exp(-d2 / s2)
  np.fill_diagonal(w, 0.0)
  return np.diag(w.sum(1)) - w


def band_projectors(centroids, starts: Sequence[int] = DEFAULT_STARTS
                    ) -> np.ndarray:
  """[K, M, M] projectors of the eigen-index bands starting at `starts`
  (starts[0] = 0, increasing, < M); a start inside a group of repeated
  eigenvalues moves to the group's end, and a band left empty is dropped
  (so K may be smaller than len(starts))."""
  lap = laplacian(centroids)
  m = lap.shape[0]
  starts = [int(v) for v in starts]
  if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or (
      starts[-1] >= m):
    raise ValueError(f"starts={tuple(starts)} must begin at 0 and increase "
                     f"strictly below M = {m}, e.g. {DEFAULT_STARTS}.")
  lam, u = np.linalg.eigh(lap)
  scale = max(float(lam[-1]), 1e-12)
  cuts = []
  for s in starts[1:]:
    while s < m and lam[s] - lam[s - 1] <= DEGENERATE * scale:
      s += 1
    if s < m and (not cuts or s > cuts[-1]):
      cuts.append(s)
  edges = [0] + cuts + [m]
  return np.stack([u[:, a:b] @ u[:, a:b].T for a, b in zip(edges, edges[1:])
                   if b > a])


def band_parts(projectors, field) -> np.ndarray:
  """[K, M, d]: the part of a per-molecule field [M, d] in each band."""
  return np.einsum("kij,jd->kid", np.asarray(projectors),
                   np.asarray(field, np.float64))
