"""Scale-adaptive compute: each band's network runs on bands 0..s only.

docs/method.md#scale-adaptive-compute-model-loss-and-sampler. For an
orthonormal transform without window overlap, while band s flows every
finer band of x_t is still its initial noise (independent of the data and
of bands 0..s) and its target is 0, so the optimal velocity depends on
bands 0..s only and is non-zero on band s only. `kamp.coarse` puts bands
0..s on a grid [H / f, W / f]; here one set of backbone weights runs on
that grid:

  v_s(x, t) = from_coarse(band_only(model(to_coarse(x), t)))

Everything outside band s is 0 by construction. This module holds the
plan and the field, pure functions of static plans (call them at trace
time); the loss and the sampler built on them are adaptive_loss.py and
adaptive_sampler.py, and run/field.py puts the three together as the
network a scale-adaptive run trains.

  plan(path, model)          checks the run can do it (the errors of
                             kamp.coarse for transforms and cut-offs);
                             one CoarseGrid and layers.Frame per band
  in_units                   the backbone on a grid in the run's units
  band_velocity / velocity   the field above at full resolution

Units of a coarse grid (`UNITS`, config.model.coarse_units). to_coarse
keeps coefficient values, so a grid with factor f = H / h holds f times
the f x f block means of the image's bands 0..s (for Haar: 2^m times the
block mean after m levels), while the noise keeps unit variance. One set
of weights then meets the data at a different scale on every grid.
"mean" divides the grid by f on the way in and multiplies the output by f
(the velocity target is in coefficient units): every grid then shows the
network what a full-resolution network sees of bands 0..s, block-averaged,
and the loss is unchanged in its units. "coefficients" is the grid as is
(the runs before the option).
"""
from typing import Callable, NamedTuple

from jax import lax

from kflow_jax import kamp
from kflow_jax.flow import paths as paths_lib
from kflow_jax.kamp import coarse
from kflow_jax.models import layers

# Where pixel n of a coarse grid (factor f) sits on the full grid, in full
# pixels: n f + offset. A DCT-II basis function of the small grid equals the
# full grid's at n f + (f - 1) / 2 (cos(pi k (2n + 1) / 2h) = cos(pi k (2m +
# 1) / 2H) there), the block centre; so does a Haar approximation, the sum
# of its f x f block (longer orthogonal filters add a fractional shift of
# their own, not modelled). The DFT samples the band-limited image at n f.
_BLOCK_CENTRE = lambda f: (f - 1) / 2.0
PIXEL_OFFSET = {"fourier": lambda f: 0.0}
# config.model.coarse_units -> what a grid with factor f is divided by on
# the way into the backbone (and its output multiplied by).
UNITS = {"coefficients": lambda f: 1.0, "mean": float}


class Plan(NamedTuple):
  """What a scale-adaptive run needs per band (static).

  path: the run's paths.Path.
  grids: one kamp.coarse.CoarseGrid per band s (bands 0..s).
  frames: one layers.Frame per band: where its grid's pixels sit.
  pixel_ratio: float per band, (h w) / (H W) of its grid.
  units: a key of UNITS, the backbone's units on the coarse grids.
  """
  path: paths_lib.Path
  grids: tuple
  frames: tuple
  pixel_ratio: tuple
  units: str = "coefficients"

  @property
  def num_bands(self) -> int:
    return len(self.grids)

  def shapes(self) -> list:
    return [g.shape for g in self.grids]


def plan(path: paths_lib.Path, model=None,
         units: str = "coefficients") -> Plan:
  """The run's per-band grids, or a ValueError saying why it cannot run
  scale-adaptive: a transform without coarse grids (identity, pca,
  biorthogonal wavelets) or a cut-off that does not fit (both from
  kamp.coarse, naming the cut-offs that fit), window overlap, or a backbone
  that cannot take a band's grid."""
  check_no_overlap(path)
  if units not in UNITS:
    raise ValueError(
        f"config.model.coarse_units={units!r} is not one of "
        f"{sorted(UNITS)}: 'coefficients' feeds the backbone the coarse grid "
        "as it is, 'mean' divides it by its factor (block means).")
  tr = path.transform
  grids = tuple(coarse.coarse_grid(tr, path.cutoffs, s)
                for s in range(path.num_bands))
  offset = PIXEL_OFFSET.get(tr.name, _BLOCK_CENTRE)
  frames = tuple(layers.Frame(g.factor, float(offset(g.factor)))
                 for g in grids)
  h, w, _ = tr.shape
  ratio = tuple(g.shape[0] * g.shape[1] / (h * w) for g in grids)
  out = Plan(path=path, grids=grids, frames=frames, pixel_ratio=ratio,
             units=units)
  if model is not None:
    check_model(out, model)
  return out


def check_no_overlap(path: paths_lib.Path, what: str = "scale-adaptive "
                     "compute", fix: str = "set config.path.overlap=0 or "
                     "config.model.scale_adaptive=False") -> None:
  """Refuses window overlap: while band s flows, band s + 1 has then
  already started, so the optimal velocity reads it (what: who needs this;
  fix: the way out, both for the message)."""
  if float(path.overlap) != 0.0:
    raise ValueError(
        f"{what} needs config.path.overlap=0 (got {path.overlap}): with "
        "overlapping windows two bands flow at once and the network would "
        f"have to see both; {fix}.")


def check_model(p: Plan, model) -> None:
  """Raises a ValueError when the backbone cannot run on some band's grid."""
  name = type(model).__name__
  multiple = getattr(model, "grid_multiple", None)
  if multiple is None:
    raise ValueError(
        f"backbone {name} has a fixed input size, so it cannot run on the "
        "coarse grids of a scale-adaptive run; use config.model.name=dit, "
        "moe_dit or unet, or config.model.scale_adaptive=False.")
  for s, g in enumerate(p.grids):
    h, w, _ = g.shape
    if h % multiple or w % multiple:
      raise ValueError(
          f"band {s} of this scale-adaptive run lives on a {h}x{w} grid "
          f"(bands 0..{s}), but backbone {name} needs H and W to be "
          f"multiples of {multiple} (its smallest input is "
          f"{multiple}x{multiple}); grids per band: "
          f"{[f'{a}x{b}' for a, b, _ in p.shapes()]}. Use a smaller patch "
          "size or fewer U-Net levels, or cut-offs whose coarsest band "
          "lives on a larger grid.")


# ----------------------------------------------------------------------------
# The field.


def in_units(apply_fn: Callable, frame, units: str) -> Callable:
  """apply_fn(z, ...) for z on the grid of `frame`, fed and read in
  `units` (UNITS): c = UNITS[units](factor); returns c apply_fn(z / c, ...)
  (apply_fn itself when c is 1: the full grid, or "coefficients")."""
  c = UNITS[units](frame.factor)
  if c == 1.0:
    return apply_fn
  return lambda z, *args, **kwargs: apply_fn(z / c, *args, **kwargs) * c


def band_velocity(apply_fn: Callable, grid: coarse.CoarseGrid, frame, x, t,
                  y=None):
  """v(x, t) for band s = grid.band at full resolution: the network
  apply_fn(z, t, y, frame) runs on z = to_coarse(x) [B, h, w, C] and only
  its band-s part is kept, so v is 0 outside band s."""
  s = grid.band
  v = apply_fn(grid.to_coarse(x), t, y, frame)
  return grid.from_coarse(grid.band_part(v, (s,)))


def velocity(apply_fn: Callable, p: Plan, x, t, y=None):
  """band_velocity with the band picked from t (lax.switch, so it runs under
  jit and scan). All examples must be in one band (a sampler's batch shares
  its t); the band of t[0] is used."""
  band = kamp.band_of_time(t[0], p.path.tau)
  branches = [
      (lambda x, t, y, g=g, f=f: band_velocity(apply_fn, g, f, x, t, y))
      for g, f in zip(p.grids, p.frames)]
  return lax.switch(band, branches, x, t, y)
