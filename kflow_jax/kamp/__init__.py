"""K-amplitude transforms: invertible linear maps with a scale label per coefficient.

`get(name, shape=(H, W, C), **kwargs) -> KTransform` is the one entry point.
Every transform is a NamedTuple of pure functions (optax style), so it can be
closed over by jitted code and carries no state.

Transforms (one module each, registered by name):
  identity  kappa 0 everywhere (plain flow matching).
  fourier   rfft2(norm="ortho") per channel, coefficients [B, C, H, W//2+1].
  dct       orthonormal DCT-II per channel, coefficients [B, C, H, W].
  wavelet   periodized multi-level DWT (PyWavelets filter-bank stencils;
            wavelet="db6", levels=3),
            packed Mallat layout [B, H, W, C], equal to PyWavelets.
  pca       U^T x from a fitted basis (basis="file.npz", patch=None|p),
            coefficients [B, D] or [B, H/p, W/p, p*p*C].

Band machinery (docs/method.md#bands) lives in `kflow_jax.kamp.bands` and
is re-exported here: `validate_edges`, `validate_cutoffs`, `even_cutoffs`,
`band_index`, `band_of_time`, `band_mean`, `band_energy`.

Coarse grids (docs/method.md#scale-adaptive-compute-coarse-grids): bands
0..s of fourier, dct and orthogonal wavelets as a smaller image, in
`kflow_jax.kamp.coarse`; each of those transforms describes its dyadic
sub-grids through `KTransform.subgrids`.
"""
import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.infra import registry


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
  subgrids: None for a transform with no lower-resolution image grid
    (identity, pca), else a zero-argument function returning the tuple of
    `Subgrid`s, one per dyadic factor the shape allows (built on first call
    and cached). Kept on the instance rather than as a registry hook
    because a sub-grid needs the build options (the wavelet's filter and
    levels), which only the built transform knows.
  """
  forward: Callable[[jax.Array], jax.Array]
  inverse: Callable[[jax.Array], jax.Array]
  kappa: np.ndarray
  weight: np.ndarray
  name: str
  shape: tuple
  orthonormal: bool
  subgrids: Optional[Callable[[], tuple]] = None


class Subgrid(NamedTuple):
  """A grid [H / factor, W / factor, C] that holds some coefficients exactly.

  The same kind of transform built on the smaller grid has, for every
  coefficient in `box`, a coefficient equal to it (same value, same Parseval
  weight), so an image on the small grid stands for the full-grid image
  whose coefficients are those of `box` (docs/method.md#scale-adaptive-compute-coarse-grids).

  factor: 2**m, m >= 1 (H and W divisible by it).
  transform: the transform on the small grid, with kappa replaced by the
    full grid's kappa of the coefficient each of its coefficients stands
    for, so band masks built with the full grid's cut-offs pick the same
    coefficients on both grids.
  box: bool numpy of the full coef_shape: coefficients with an exact place
    on the small grid.
  gather: full coefficients [B, *coef_shape] -> small-grid coefficients;
    the small grid's coefficients that stand for no box coefficient (the
    Fourier grid's own Nyquist row and column) are 0.
  scatter: the inverse on box: small-grid coefficients -> full coefficients,
    0 outside box.
  """
  factor: int
  transform: KTransform
  box: np.ndarray
  gather: Callable[[jax.Array], jax.Array]
  scatter: Callable[[jax.Array], jax.Array]


def corner_subgrid(factor: int, small: "KTransform", kappa: np.ndarray,
                   row_axis: int) -> Subgrid:
  """The Subgrid of a layout whose coarse coefficients are its top-left
  corner: rows on axis `row_axis` of kappa (columns on the next), divided by
  `factor`; `small` is the transform on the small grid, whose coefficients
  are that corner value for value (dct, wavelet)."""
  hs = kappa.shape[row_axis] // factor
  ws = kappa.shape[row_axis + 1] // factor
  corner = _corner_index(kappa.ndim, row_axis, hs, ws)
  box = np.zeros(kappa.shape, bool)
  box[corner] = True
  return Subgrid(
      factor=factor, transform=small._replace(kappa=kappa[corner].copy()),
      box=box,
      gather=functools.partial(_gather_corner, row_axis=row_axis, hs=hs,
                               ws=ws),
      scatter=functools.partial(_scatter_corner, shape=kappa.shape))


def _corner_index(ndim, row_axis, hs, ws):
  index = [slice(None)] * ndim
  index[row_axis], index[row_axis + 1] = slice(0, hs), slice(0, ws)
  return tuple(index)


def _gather_corner(coef, row_axis, hs, ws):
  # coef carries a batch axis in front of kappa's axes.
  return coef[(slice(None),) + _corner_index(coef.ndim - 1, row_axis, hs, ws)]


def _scatter_corner(coef, shape):
  return jnp.pad(coef, [(0, 0)] + [(0, n - m)
                                   for n, m in zip(shape, coef.shape[1:])])


def dyadic_factors(h: int, w: int) -> list:
  """[2, 4, ...]: every 2**m, m >= 1, that divides both h and w."""
  factors, f = [], 2
  while h % f == 0 and w % f == 0:
    factors.append(f)
    f *= 2
  return factors


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


# name -> builder(shape, **options) -> KTransform. The transform modules
# below register themselves on import. A transform that must be fitted on
# data first registers a `prepare` hook (see `prepare`).
TRANSFORMS = registry.Registry("K-amplitude transform", "config.transform",
                               positional=("shape",))


def register(name: str, **hooks):
  """Decorator registering a builder(shape, **options) -> KTransform."""
  return TRANSFORMS.register(name, **hooks)


def names() -> list:
  return TRANSFORMS.names()


def options(name: str) -> list:
  """The keyword options of transform `name` (config.transform.*)."""
  return TRANSFORMS.options(name)


def get(name: str, shape=(32, 32, 3), **kwargs) -> KTransform:
  """Builds the transform `name` for inputs of shape [B, *shape]."""
  return TRANSFORMS.build(name, check_shape(shape), **kwargs)


def prepare(name: str, options: dict, *, batches, out: str,
            **fit_options) -> dict:
  """Options with everything fitted on data filled in.

  A transform like PCA needs a basis fitted on training data before it can
  be built; its `prepare(options, batches=..., out=...)` hook fits it into
  the file `out` (unless options already name one) and returns the options
  to build with. Transforms without the hook get their options back.
  `batches` is a zero-argument callable returning an iterable of image
  batches, called only when a fit is needed; fit_options go to the hook
  (e.g. max_examples).
  """
  hook = TRANSFORMS.hook(name, "prepare")
  if hook is None:
    return dict(options)
  return hook(dict(options), batches=batches, out=out, **fit_options)


def needs_preparation(name: str, options: dict) -> bool:
  """True when `prepare` would fit something on data for these options."""
  hook = TRANSFORMS.hook(name, "needs_preparation")
  return bool(hook and hook(dict(options)))


# Importing the transform modules registers them.
from kflow_jax.kamp import identity as _identity  # noqa: E402,F401
from kflow_jax.kamp import fourier as _fourier  # noqa: E402,F401
from kflow_jax.kamp import wavelet as _wavelet  # noqa: E402,F401
from kflow_jax.kamp import dct as _dct  # noqa: E402,F401
from kflow_jax.kamp import pca as _pca  # noqa: E402,F401
from kflow_jax.kamp.bands import band_energy, band_index, band_mean, band_of_time, even_cutoffs, validate_cutoffs, validate_edges  # noqa: E402,F401
