"""The band vocabulary: edges, the band of a scale or a time, per-band means.

Two kinds of edges split [0, 1] into S half-open intervals:
  cut-offs 0 = r_0 < r_1 < ... < r_S = 1 in kappa (scale) units: band s
    holds the coefficients with r_s <= kappa < r_{s+1};
  band times 0 = tau_0 < ... < tau_S = 1: band s flows for
    tau_s <= t < tau_{s+1}.
The last interval also holds the value 1. Every module that needs a band
(paths, the band-routed MoE, losses, logging) asks here, so a scale or a
time is put in the same band everywhere (docs/method.md#bands).
"""
import jax
import jax.numpy as jnp
import numpy as np

# kappa values are stored in float32 while cut-offs are exact float64
# fractions: a cut-off meant to equal a level's kappa (5/6) would otherwise
# fall on either side of it. Values within this distance of an edge belong
# to the band above it, as the half-open rule intends.
KAPPA_TOL = 1e-6


def validate_edges(edges, what: str = "cutoffs") -> tuple:
  """Edges 0 = e_0 < e_1 < ... < e_S = 1 as a tuple of floats."""
  if edges is None:
    raise ValueError(f"{what} are missing: give S + 1 band edges from 0 to "
                     "1, e.g. (0.0, 0.5, 1.0).")
  try:
    e = tuple(float(v) for v in np.asarray(edges, np.float64).reshape(-1))
  except (TypeError, ValueError):
    raise ValueError(f"{what} must be a sequence of numbers, got "
                     f"{edges!r}.") from None
  if len(e) < 2 or e[0] != 0.0 or e[-1] != 1.0:
    raise ValueError(
        f"{what} must be band edges from 0 to 1 (S + 1 values), e.g. (0.0, "
        f"0.25, 1.0); got {e}.")
  if any(b <= a for a, b in zip(e[:-1], e[1:])):
    raise ValueError(f"{what} must be strictly increasing, got {e}.")
  return e


def validate_cutoffs(cutoffs) -> tuple:
  return validate_edges(cutoffs, "cutoffs")


def even_cutoffs(num_scales: int) -> tuple:
  """Edges of `num_scales` bands of equal width in kappa."""
  if int(num_scales) < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  return tuple(float(v) for v in np.linspace(0.0, 1.0, int(num_scales) + 1))


def band_index(kappa, cutoffs) -> np.ndarray:
  """int32 band of every coefficient, shape of kappa (static numpy).

  Decided in float64 with KAPPA_TOL, so a coefficient whose kappa equals a
  cut-off lands in the band that starts there.
  """
  c = np.asarray(validate_cutoffs(cutoffs)[1:-1], np.float64)
  k = np.asarray(kappa, np.float64)
  return np.searchsorted(c - KAPPA_TOL, k, side="right").astype(np.int32)


def band_of_time(t, tau) -> jnp.ndarray:
  """int32 band flowing at each time t (any shape, traced or not):
  tau_s <= t < tau_{s+1}, t = 1 in the last band. Compared in float32,
  the precision of t in every caller."""
  tau = validate_edges(tau, "tau")
  inner = jnp.asarray(tau[1:-1], jnp.float32)
  band = jnp.searchsorted(inner, jnp.asarray(t, jnp.float32), side="right")
  return jnp.clip(band, 0, len(tau) - 2).astype(jnp.int32)


def band_mean(sums, counts):
  """Per-band mean from per-band sums and counts; NaN for empty bands.

  Works on numpy and jax arrays alike (per-band losses are reduced as sums
  and counts so that shards and log windows can be added up first).
  """
  xp = jnp if isinstance(sums, jax.Array) else np
  sums, counts = xp.asarray(sums), xp.asarray(counts)
  return xp.where(counts > 0, sums / xp.maximum(counts, 1), xp.nan)


def band_energy(transform, x, cutoffs):
  """Mean energy per band, E ||P_s x||^2 over the batch: float32 [S].

  Uses the transform's Parseval weights, so for orthonormal transforms the
  band energies sum to the mean ||x||^2.
  """
  c = validate_cutoffs(cutoffs)
  idx = band_index(transform.kappa, c)
  coef = transform.forward(x)
  e = jnp.abs(coef) ** 2 * transform.weight
  e = jnp.mean(e, axis=0)
  onehot = (idx[None] == np.arange(len(c) - 1).reshape((-1,) + (1,) * idx.ndim))
  return jnp.sum(jnp.where(onehot, e[None], 0.0),
                 axis=tuple(range(1, idx.ndim + 1))).astype(jnp.float32)
