"""Coarse grids: bands 0..s of an orthonormal transform as a smaller image.

docs/method.md#scale-adaptive-compute-coarse-grids. While band s flows,
every finer band of the K-Flow state is still its initial noise, which is
independent of the data and of the coarser noise, and the target velocity
is 0 there; so the optimal velocity depends on bands 0..s only. For
fourier, dct and orthogonal wavelets those bands are the coefficients of an
image on a grid [H / f, W / f] (f = 2**m), and a network for band s can run
on that image:

  grid = coarse_grid(transform, cutoffs, s)   # or the functions below
  z = grid.to_coarse(x)          # [B, h, w, C], exactly bands 0..s of x
  x = grid.from_coarse(z)        # bands 0..s from z, every finer band 0
  v = grid.band_part(z, (s,))    # band s only, still on the small grid

from_coarse(to_coarse(x)) is the projection of x on bands 0..s, and
to_coarse is an isometry on those bands (same coefficient values, no
rescaling), so white noise keeps unit variance per coefficient.

Which cut-offs fit: bands 0..s must be every coefficient below the first
scale the grid lacks, i.e. fill the grid up to its own edge (for wavelets
any cut-off does, as kappa only takes level values; for fourier and dct the
top edge must be the radius of the grid's inscribed disk). Other cut-offs
are refused (`strict=True`) with the intervals that fit; `strict=False`
runs them on the smallest grid that holds bands 0..s, still exact, with the
coefficients of that grid outside bands 0..s carried as zeros.
"""
from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp
from kflow_jax.kamp import bands as bands_lib

# Why a transform has no coarse grid (the generic message covers others).
NO_GRID = {
    "identity": "every coefficient has kappa 0, so there is one band and "
                "nothing finer to leave out (plain flow matching)",
    "pca": "its coefficients are principal components of the whole image "
           "(or of every patch), not samples of a spatial grid, so bands "
           "0..s are a shorter vector, not a smaller image",
}


class CoarseGrid(NamedTuple):
  """Bands 0..s of `transform` on the grid [H / factor, W / factor, C].

  shape: (h, w, C) of the coarse image.
  factor: H / h (1 when bands 0..s need the full grid, e.g. s = S - 1).
  band: s.
  transform: the transform on the coarse grid (the full transform itself
    when factor is 1), kappa = the full grid's kappa of each coefficient.
  bands: int32 numpy of the coarse transform's coef_shape: the full grid's
    band of each coarse coefficient, -1 where it stands for none.
  members: bool numpy, same shape: the coarse coefficients of bands 0..s.
  to_coarse: x [B, H, W, C] -> z [B, h, w, C] holding exactly bands 0..s.
  from_coarse: z [B, h, w, C] -> x [B, H, W, C]: bands 0..s from z, finer
    bands 0 (the coarse coefficients outside bands 0..s are ignored).
  band_part: (z, bands) -> z: the part of z in `bands`, on the coarse grid.
  coef_to_coarse: full coefficients [B, *coef_shape] -> the coarse
    transform's coefficients of bands 0..s (0 elsewhere): T_g(to_coarse(x))
    without leaving coefficient space, so values are moved, not recomputed.
  coef_from_coarse: the inverse on bands 0..s: coarse coefficients -> full
    coefficients, finer bands 0. A sampler that keeps its state in
    coefficient space uses this pair to leave the finer bands' noise
    untouched bit for bit.
  """
  shape: tuple
  factor: int
  band: int
  transform: kamp.KTransform
  bands: np.ndarray
  members: np.ndarray
  to_coarse: Callable
  from_coarse: Callable
  band_part: Callable
  coef_to_coarse: Callable
  coef_from_coarse: Callable


class Fit(NamedTuple):
  """Top cut-offs r with lo < r <= hi put bands 0..s on a `shape` grid."""
  lo: float
  hi: float
  shape: tuple


def _no_grid(name) -> ValueError:
  why = NO_GRID.get(name, "it describes no lower-resolution grid "
                    "(KTransform.subgrids is None)")
  return ValueError(
      f"transform {name!r} has no lower-resolution grid for coarse bands: "
      f"{why}. Coarse grids need fourier, dct or an orthogonal wavelet.")


def check_transform_name(name: str) -> None:
  """Refuses, by name, a transform known to have no coarse grid (the error
  coarse_grid gives), before anything is built or fitted for it."""
  if name in NO_GRID:
    raise _no_grid(name)


def check_orthonormal(transform, why: str = "the optimal velocity of band s "
                     "depends on the finer bands and a coarse grid would not "
                     "be exact", fix: str = "Use an orthogonal wavelet (haar, "
                     "db*, sym*, coif*), dct or fourier.") -> None:
  """Refuses a transform that is not orthonormal: the finer-band noise is
  then correlated with the coarser bands (why: what that breaks for the
  caller; fix: the way out, both for the message). Coarse grids, band
  independence and hidden input bands all rest on it."""
  if not transform.orthonormal:
    raise ValueError(
        f"transform {transform.name!r} (shape {transform.shape}) is not "
        "orthonormal: its finer-band coefficients of white noise are "
        f"correlated with the coarser ones, so {why}. {fix}")


def _subgrids(transform) -> tuple:
  """The transform's dyadic sub-grids, or a ValueError saying why none."""
  if transform.subgrids is None:
    raise _no_grid(transform.name)
  check_orthonormal(transform)
  return transform.subgrids()


def _tight(kappa, box) -> np.ndarray:
  """Every coefficient below the smallest kappa that `box` lacks: the
  largest set of whole scales the grid holds."""
  outside = kappa[~box]
  if outside.size == 0:
    return np.ones(kappa.shape, bool)
  return kappa < outside.min()


def fitting_cutoffs(transform) -> list:
  """The top cut-offs r_{s+1} that put bands 0..s on a smaller grid.

  One `Fit(lo, hi, (h, w))` per distinct set of coefficients, coarsest
  grid first: a top edge r with lo < r <= hi (kappa units, up to the band
  tolerance) makes bands 0..s exactly what the (h, w) grid holds. hi is
  the kappa of the first coefficient the grid lacks, the natural value to
  use. The full grid is not listed: the top edge of the last band, 1, always
  fits it.
  """
  kappa = np.asarray(transform.kappa)
  fits, seen = [], []
  for g in sorted(_subgrids(transform), key=lambda g: -g.factor):
    tight = _tight(kappa, g.box)
    if tight.all() or not tight.any() or any(
        np.array_equal(tight, t) for t in seen):
      continue  # a larger grid with the same coefficients is no better
    seen.append(tight)
    h, w, _ = transform.shape
    fits.append(Fit(float(kappa[tight].max()), float(kappa[~tight].min()),
                    (h // g.factor, w // g.factor)))
  return fits


def _check_band(s, num_bands) -> int:
  if isinstance(s, bool) or not isinstance(s, (int, np.integer)) \
      or not 0 <= s < num_bands:
    raise ValueError(
        f"band s must be an int in [0, {num_bands - 1}] for {num_bands} "
        f"bands, got {s!r}.")
  return int(s)


def _misfit(transform, cutoffs, s, grid_shape) -> str:
  r = cutoffs[s + 1]
  fits = fitting_cutoffs(transform)
  below = [f for f in fits if f.hi < r]
  above = [f for f in fits if f.hi >= r]
  near = [f"{f.hi:.6f} (bands 0..{s} on {_hw(f.shape)})"
          for f in below[-1:] + above[:1]]
  listed = ", ".join(f"({f.lo:.6f}, {f.hi:.6f}] -> {_hw(f.shape)}"
                     for f in fits) or "none"
  h, w, _ = transform.shape
  if grid_shape is None:
    where = f"the full {h}x{w} grid"
    why = (f"no smaller dyadic grid holds bands 0..{s}, so they would run on "
           f"{where}")
  else:
    where = f"the {_hw(grid_shape)} grid"
    why = (f"bands 0..{s} lie inside {where} but stop short of its edge, so "
           "part of that grid would carry zeros")
  return (
      f"cut-off {r:.6g} (the top of band {s} in {tuple(cutoffs)}) does not "
      f"fit a coarse grid of transform {transform.name!r} with shape "
      f"{transform.shape}: {why}. Nearest cut-offs that fit: "
      f"{' or '.join(near) if near else 'none'}. All that fit (top edge "
      f"interval -> grid): {listed}. Or pass strict=False to run bands "
      f"0..{s} on {where} anyway (still exact, with the coefficients outside "
      "the bands carried as zeros).")


def _hw(shape) -> str:
  return f"{shape[0]}x{shape[1]}"


def coarse_grid(transform, cutoffs, s, *, strict: bool = True) -> CoarseGrid:
  """The smallest grid holding bands 0..s of `transform` (see module doc).

  Raises ValueError for a transform without coarse grids (identity, pca,
  biorthogonal wavelets) and, when strict, for a top edge r_{s+1} that does
  not fit (the message names the nearest that do). Static: call it at
  trace time, the returned functions are jit-safe.
  """
  cutoffs = kamp.validate_cutoffs(cutoffs)
  s = _check_band(s, len(cutoffs) - 1)
  grids = _subgrids(transform)
  kappa = np.asarray(transform.kappa)
  band = bands_lib.band_index(kappa, cutoffs)
  members = band <= s
  if members.all():
    return _full_grid(transform, band, s)
  holding = [g for g in grids if g.box[members].all()]
  grid = max(holding, key=lambda g: g.factor) if holding else None
  if strict and (grid is None
                 or not np.array_equal(members, _tight(kappa, grid.box))):
    h, w, _ = transform.shape
    raise ValueError(_misfit(
        transform, cutoffs, s,
        None if grid is None else (h // grid.factor, w // grid.factor)))
  if grid is None:
    return _full_grid(transform, band, s)
  return _sub_grid(transform, grid, cutoffs, s)


def _full_grid(transform, band, s) -> CoarseGrid:
  """Bands 0..s on the full grid: the projection (identity if they are all
  the coefficients)."""
  members = band <= s
  everything = bool(members.all())

  def project(x, keep):
    if keep.all():
      _check_coarse(x, transform.shape, s)
      return x.astype(jnp.float32)
    return transform.inverse(jnp.where(keep, transform.forward(x), 0))

  def from_coarse(z):
    _check_coarse(z, transform.shape, s)
    return z.astype(jnp.float32) if everything else project(z, members)

  return CoarseGrid(
      shape=tuple(transform.shape), factor=1, band=s, transform=transform,
      bands=band, members=members,
      to_coarse=lambda x: project(x, members), from_coarse=from_coarse,
      band_part=lambda z, keep: project(z, np.isin(band, _ids(keep))),
      coef_to_coarse=lambda c: jnp.where(members, c, 0),
      coef_from_coarse=lambda c: jnp.where(members, c, 0))


def _sub_grid(transform, grid, cutoffs, s) -> CoarseGrid:
  small = grid.transform
  # Coarse coefficients that stand for a full one: gather of a full mask.
  held = np.asarray(grid.gather(jnp.ones((1,) + np.shape(transform.kappa),
                                         jnp.float32)))[0] != 0
  bands = np.where(held, bands_lib.band_index(small.kappa, cutoffs),
                   -1).astype(np.int32)
  members = held & (bands <= s)
  h, w, c = transform.shape
  shape = (h // grid.factor, w // grid.factor, c)

  def to_coarse(x):
    return small.inverse(jnp.where(members, grid.gather(transform.forward(x)),
                                   0))

  def from_coarse(z):
    _check_coarse(z, shape, s)
    return transform.inverse(grid.scatter(
        jnp.where(members, small.forward(z), 0)))

  def band_part(z, keep):
    _check_coarse(z, shape, s)
    mask = held & np.isin(bands, _ids(keep))
    return small.inverse(jnp.where(mask, small.forward(z), 0))

  return CoarseGrid(
      shape=shape, factor=int(grid.factor), band=s, transform=small,
      bands=bands, members=members, to_coarse=to_coarse,
      from_coarse=from_coarse, band_part=band_part,
      coef_to_coarse=lambda c: jnp.where(members, grid.gather(c), 0),
      coef_from_coarse=lambda c: grid.scatter(jnp.where(members, c, 0)))


def _ids(keep) -> np.ndarray:
  return np.asarray(keep, np.int64).reshape(-1)


def _check_coarse(z, shape, s):
  if z.ndim != 4 or tuple(z.shape[1:]) != tuple(shape):
    raise ValueError(
        f"the coarse grid of bands 0..{s} holds images [B, {shape[0]}, "
        f"{shape[1]}, {shape[2]}], got an array of shape {tuple(z.shape)}.")


# Functional forms (each builds the grid; keep a CoarseGrid to reuse it).


def coarse_shape(transform, cutoffs, s, *, strict: bool = True) -> tuple:
  """(h, w, C) of the grid bands 0..s live on."""
  return coarse_grid(transform, cutoffs, s, strict=strict).shape


def to_coarse(transform, cutoffs, x, s, *, strict: bool = True):
  """x [B, H, W, C] -> [B, h, w, C] holding exactly bands 0..s of x."""
  return coarse_grid(transform, cutoffs, s, strict=strict).to_coarse(x)


def from_coarse(transform, cutoffs, z, s, *, strict: bool = True):
  """z [B, h, w, C] -> x [B, H, W, C]: bands 0..s from z, finer bands 0."""
  return coarse_grid(transform, cutoffs, s, strict=strict).from_coarse(z)


def band_only(transform, cutoffs, z, s, *, strict: bool = True):
  """Band s of a coarse image z, on the coarse grid (e.g. to project a
  network's output on the band that flows)."""
  return coarse_grid(transform, cutoffs, s, strict=strict).band_part(z, (s,))
