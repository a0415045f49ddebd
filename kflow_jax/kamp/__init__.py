"""K-amplitude transforms: invertible linear maps with a scale label per coefficient.

`get(name, shape=(H, W, C), **kwargs) -> KTransform` is the one entry point.
Every transform is a NamedTuple of pure functions (optax style), so it can be
closed over by jitted code and carries no state.

Transforms (one module each, registered by name):
  identity  kappa 0 everywhere (plain flow matching).
  fourier   rfft2(norm="ortho") per channel, coefficients [B, C, H, W//2+1].
  dct       orthonormal DCT-II per channel, coefficients [B, C, H, W].
  wavelet   periodized multi-level DWT by lifting (wavelet="db6", levels=3),
            packed Mallat layout [B, H, W, C], equal to PyWavelets.
  pca       U^T x from a fitted basis (basis="file.npz", patch=None|p),
            coefficients [B, D] or [B, H/p, W/p, p*p*C].

Band machinery (DESIGN.md section 2) lives in `kflow_jax.kamp.bands` and is
re-exported here: `band_index`, `band_energy`, `even_cutoffs`,
`validate_cutoffs`.
"""
from typing import Callable, NamedTuple

import jax
import numpy as np


class KTransform(NamedTuple):
  """An invertible linear transform x -> c with a static scale grid.

  forward: x float [B, H, W, C] -> coefficients c [B, *coef_shape] (computed
    in float32 whatever the input dtype; complex64 for Fourier).
  inverse: c -> x float32 [B, H, W, C].
  kappa: np.ndarray float32 of coef_shape, the scale of every coefficient in
    [0, 1] (0 = coarsest). Static (numpy), so masks built from it are
    compile-time constants.
  weight: np.ndarray float32 of coef_shape, the Parseval multiplicity of each
    coefficient: sum(weight * |c|^2) = ||x||^2 for orthonormal transforms
    (2 for the half-spectrum columns of rfft2 that stand for two bins, else 1).
  name: registry name.
  shape: (H, W, C) the transform was built for.
  orthonormal: whether forward preserves the (weighted) norm exactly.
  """
  forward: Callable[[jax.Array], jax.Array]
  inverse: Callable[[jax.Array], jax.Array]
  kappa: np.ndarray
  weight: np.ndarray
  name: str
  shape: tuple
  orthonormal: bool


def check_shape(shape) -> tuple:
  """Validates an (H, W, C) shape and returns it as a tuple of ints."""
  try:
    shape = tuple(int(s) for s in shape)
  except (TypeError, ValueError):
    raise ValueError(
        f"shape must be (H, W, C) with positive ints, got {shape!r}.") from None
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(
        f"shape must be (H, W, C) with positive ints, got {shape!r}; "
        "e.g. shape=(32, 32, 3).")
  return shape


def check_input(x, shape, name):
  """Raises a clear ValueError when x is not [B, *shape] (trace-time check)."""
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
    raise ValueError(
        f"kamp transform {name!r} was built for inputs [B, {shape[0]}, "
        f"{shape[1]}, {shape[2]}] but got an array of shape {tuple(x.shape)}; "
        f"build it with kamp.get({name!r}, shape={tuple(x.shape[1:])}) "
        "or reshape the input.")


def radial_kappa(r, channels: int) -> np.ndarray:
  """kappa from a per-pixel radius grid: r / max(r), the same for every
  channel, float32 [channels, *r.shape] (a 1x1 grid has kappa 0)."""
  r = np.asarray(r, np.float64)
  rmax = r.max()
  kappa = (r / rmax if rmax > 0 else np.zeros_like(r)).astype(np.float32)
  return np.broadcast_to(kappa, (int(channels),) + kappa.shape).copy()


# Registry: name -> builder(shape, **kwargs) -> KTransform. Builders are
# imported lazily by the modules below registering themselves here.
_REGISTRY: dict = {}


def register(name: str):
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def names() -> list:
  return sorted(_REGISTRY)


def get(name: str, shape=(32, 32, 3), **kwargs) -> KTransform:
  """Builds the transform `name` for inputs of shape [B, *shape]."""
  if name not in _REGISTRY:
    raise ValueError(
        f"Unknown K-amplitude transform {name!r}; valid names: {names()}.")
  return _REGISTRY[name](check_shape(shape), **kwargs)


# Importing the transform modules registers them.
from kflow_jax.kamp import identity as _identity  # noqa: E402,F401
from kflow_jax.kamp import fourier as _fourier  # noqa: E402,F401
from kflow_jax.kamp import wavelet as _wavelet  # noqa: E402,F401
from kflow_jax.kamp import dct as _dct  # noqa: E402,F401
from kflow_jax.kamp import pca as _pca  # noqa: E402,F401
from kflow_jax.kamp.bands import band_energy, band_index, even_cutoffs, validate_cutoffs  # noqa: E402,F401
