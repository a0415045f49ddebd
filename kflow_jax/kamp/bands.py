"""Bands: groups of coefficients by scale, from cut-offs in kappa units.

Cut-offs are the full list of edges 0 = r_0 < r_1 < ... < r_S = 1; band s
holds r_s <= kappa < r_{s+1}, the last band also holds kappa = 1
(DESIGN.md section 2).
"""
import jax.numpy as jnp
import numpy as np


def even_cutoffs(num_scales: int) -> tuple:
  """Edges of `num_scales` bands of equal width in kappa."""
  if int(num_scales) < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  return tuple(float(v) for v in np.linspace(0.0, 1.0, int(num_scales) + 1))


def validate_cutoffs(cutoffs) -> tuple:
  """Checks edges start at 0, end at 1 and strictly increase."""
  c = tuple(float(v) for v in cutoffs)
  if len(c) < 2 or c[0] != 0.0 or c[-1] != 1.0:
    raise ValueError(
        f"cutoffs must be band edges from 0 to 1, e.g. (0.0, 0.25, 1.0); got "
        f"{c}.")
  if any(b <= a for a, b in zip(c[:-1], c[1:])):
    raise ValueError(f"cutoffs must be strictly increasing, got {c}.")
  return c


def band_index(kappa, cutoffs) -> np.ndarray:
  """int32 band of every coefficient, shape of kappa (static numpy)."""
  c = validate_cutoffs(cutoffs)
  idx = np.searchsorted(np.asarray(c[1:-1]), np.asarray(kappa), side="right")
  return idx.astype(np.int32)


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
