"""Scale-adaptive compute: each band's network runs on bands 0..s only.

docs/method.md#scale-adaptive-compute-model-loss-and-sampler. For an
orthonormal transform without window overlap, while band s flows every
finer band of x_t is still its initial noise (independent of the data and
of bands 0..s) and its target is 0, so the optimal velocity depends on
bands 0..s only and is non-zero on band s only. `kamp.coarse` puts bands
0..s on a grid [H / f, W / f]; here one set of backbone weights runs on
that grid:

  v_s(x, t) = from_coarse(band_only(model(to_coarse(x), t)))

Everything outside band s is 0 by construction. The pieces, all pure
functions of static plans (call them at trace time):

  plan(path, model)          checks the run can do it (the errors of
                             kamp.coarse for transforms and cut-offs);
                             one CoarseGrid and layers.Frame per band
  band_velocity / velocity   the field above at full resolution
  band_shares, batch_sizes,  training: per-band sub-batches of static
  band_time, coarse_pair     shapes, t drawn inside the band, x_t and u_t
                             on the band's grid
  sharded_loss_and_grad      the data-parallel training / eval loss
  make_sampler               each band's steps at its own resolution, with
                             NFE per band and full-resolution equivalents
"""
import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from kflow_jax import kamp
from kflow_jax import models
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import sampling
from kflow_jax.infra import sharding
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


class Plan(NamedTuple):
  """What a scale-adaptive run needs per band (static).

  path: the run's paths.Path.
  grids: one kamp.coarse.CoarseGrid per band s (bands 0..s).
  frames: one layers.Frame per band: where its grid's pixels sit.
  pixel_ratio: float per band, (h w) / (H W) of its grid.
  """
  path: paths_lib.Path
  grids: tuple
  frames: tuple
  pixel_ratio: tuple

  @property
  def num_bands(self) -> int:
    return len(self.grids)

  def shapes(self) -> list:
    return [g.shape for g in self.grids]


def plan(path: paths_lib.Path, model=None) -> Plan:
  """The run's per-band grids, or a ValueError saying why it cannot run
  scale-adaptive: a transform without coarse grids (identity, pca,
  biorthogonal wavelets) or a cut-off that does not fit (both from
  kamp.coarse, naming the cut-offs that fit), window overlap, or a backbone
  that cannot take a band's grid."""
  check_no_overlap(path)
  tr = path.transform
  grids = tuple(coarse.coarse_grid(tr, path.cutoffs, s)
                for s in range(path.num_bands))
  offset = PIXEL_OFFSET.get(tr.name, _BLOCK_CENTRE)
  frames = tuple(layers.Frame(g.factor, float(offset(g.factor)))
                 for g in grids)
  h, w, _ = tr.shape
  ratio = tuple(g.shape[0] * g.shape[1] / (h * w) for g in grids)
  out = Plan(path=path, grids=grids, frames=frames, pixel_ratio=ratio)
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


# ----------------------------------------------------------------------------
# Training: per-band sub-batches.


def _phi(z: float) -> float:
  return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _logit(t: float) -> float:
  if t <= 0.0:
    return -math.inf
  if t >= 1.0:
    return math.inf
  return math.log(t / (1.0 - t))


def band_shares(path: paths_lib.Path, t_sampling: str = "uniform", *,
                band_weights: Optional[Sequence[float]] = None,
                logit_mean: float = 0.0, logit_std: float = 1.0
                ) -> np.ndarray:
  """float64 [S]: P(band(t) = s) under the run's t sampling
  (paths.sample_t): the band lengths for uniform, the normalized
  band_weights for band and band_logit_normal, the logit-normal mass of
  [tau_s, tau_{s+1}) for logit_normal."""
  tau = np.asarray(path.tau, np.float64)
  if t_sampling not in paths_lib.T_SAMPLING:
    raise ValueError(f"Unknown t sampling {t_sampling!r}; valid: "
                     f"{paths_lib.T_SAMPLING}.")
  if t_sampling == "uniform":
    return np.diff(tau)
  if t_sampling in ("band", "band_logit_normal"):
    return paths_lib.band_probabilities(path, band_weights)
  if not logit_std > 0:
    raise ValueError(f"logit_std must be > 0, got {logit_std}.")
  cdf = [_phi((_logit(v) - logit_mean) / logit_std) for v in tau]
  return np.diff(np.asarray(cdf, np.float64))


def batch_sizes(shares, batch: int,
                explicit: Optional[Sequence[int]] = None) -> tuple:
  """Examples per band in a batch of `batch`: `explicit` when given (it
  must sum to batch and give every band with a positive share at least
  one), else proportional to the shares, rounded by largest remainder
  (floor(p_s B), the examples left go one each to the largest fractional
  parts, ties to the coarser band), and then at least 1 for every band with
  a positive share (taken from the largest sub-batch)."""
  p = np.asarray(shares, np.float64)
  p = p / np.sum(p)
  n = int(batch)
  live = p > 0
  if explicit is not None:
    sizes = [int(v) for v in explicit]
    bad = (len(sizes) != p.size or min(sizes) < 0 or sum(sizes) != n
           or any(live[i] and not sizes[i] for i in range(p.size))
           or any(sizes[i] and not live[i] for i in range(p.size)))
    if bad:
      raise ValueError(
          f"config.loss.band_batch_sizes={tuple(explicit)} must be "
          f"{p.size} ints >= 0 summing to the batch size {n}, positive "
          "exactly for the bands with a positive share of t (shares "
          f"{np.round(p, 6).tolist()}).")
    return tuple(sizes)
  if n < int(live.sum()):
    raise ValueError(
        f"a batch of {n} cannot hold one example of each of the "
        f"{int(live.sum())} bands a scale-adaptive step trains; raise "
        "config.batch_size.")
  share = p * n
  sizes = np.floor(share).astype(int)
  # Rounded so that equal shares up to float noise (band times 1/3) tie.
  order = sorted(range(p.size),
                 key=lambda i: (-round(share[i] - sizes[i], 9), i))
  for i in order[:n - int(sizes.sum())]:
    sizes[i] += 1
  for i in np.flatnonzero(live & (sizes == 0)):
    sizes[int(np.argmax(sizes))] -= 1
    sizes[i] = 1
  return tuple(int(v) for v in sizes)


def band_time(rng, path: paths_lib.Path, s: int,
              t_sampling: str = "uniform", *, logit_mean: float = 0.0,
              logit_std: float = 1.0, **unused) -> jax.Array:
  """float32 scalar t in [tau_s, tau_{s+1}) drawn from the run's t
  sampling given band s: uniform there for "uniform" and "band", the
  logit-normal truncated to the band (inverse CDF) for "logit_normal", the
  logit-normal of the band's local time for "band_logit_normal"."""
  del unused  # band_weights: they only set how often a band is drawn
  lo, hi = np.float32(path.tau[s]), np.float32(path.tau[s + 1])
  u = jax.random.uniform(rng, (), jnp.float32)
  if t_sampling == "logit_normal":
    a = _phi((_logit(float(lo)) - logit_mean) / logit_std)
    b = _phi((_logit(float(hi)) - logit_mean) / logit_std)
    z = jax.scipy.special.ndtri(jnp.clip(a + (b - a) * u, 1e-12,
                                         1.0 - 1e-7))
    t = jax.nn.sigmoid(logit_mean + logit_std * z)
  elif t_sampling == "band_logit_normal":
    z = jax.random.normal(rng, (), jnp.float32)
    t = lo + (hi - lo) * jax.nn.sigmoid(logit_mean + logit_std * z)
  else:
    t = lo + (hi - lo) * u
  # Inside the band's half-open interval despite rounding.
  return jnp.clip(t, lo, np.nextafter(hi, lo))


def _band_window(path, s):
  """(start, length) of band s's window, as float32 (the path's values)."""
  where = np.flatnonzero(path.band.reshape(-1) == s)[0]
  return (float(path.start.reshape(-1)[where]),
          float(path.length.reshape(-1)[where]))


def coarse_pair(p: Plan, s: int, z0, z1, t) -> tuple:
  """(x_t, u_t) of band s on its grid, from z0 = to_coarse(x0) and
  z1 = to_coarse(x1) [B, h, w, C] and t [B] in band s.

  Bands below s have finished (alpha = 1: data), band s blends with the
  scalar a(u) of its window (all its coefficients share it), finer bands
  are not on the grid; so x_t = z0 + P_{<s}(z1 - z0) + a P_s(z1 - z0) and
  u_t = a' P_s(z1 - z0), exactly to_coarse of the full-resolution pair.
  """
  grid, path = p.grids[s], p.path
  d = z1 - z0
  d_s = grid.band_part(d, (s,))
  start, length = _band_window(path, s)
  t = paths_lib.check_t(t, z0.shape[0])
  u = jnp.clip((t - start) / length, 0.0, 1.0)
  a, da = paths_lib.BLENDS.get(path.blend)(u)
  end = start + length
  inside = (t >= start) & ((t < end) | (end >= 1.0))
  da = jnp.where(inside, da / length, 0.0)
  expand = lambda v: v.reshape((-1,) + (1,) * (z0.ndim - 1))
  x_t = z0 + expand(a) * d_s
  if s:
    x_t = x_t + grid.band_part(d, tuple(range(s)))
  return x_t, expand(da) * d_s


class LossSetup(NamedTuple):
  """The static choices of the scale-adaptive loss (see make_loss_setup)."""
  t_sampling: str
  t_options: dict
  shares: np.ndarray          # P(band s) under the t sampling
  band_loss_weights: Optional[np.ndarray]
  explicit_sizes: Optional[tuple]


def make_loss_setup(path, t_sampling="uniform", t_options=None,
                    band_loss_weights=None, band_batch_sizes=None
                    ) -> LossSetup:
  t_options = dict(t_options or {})
  shares = band_shares(path, t_sampling, **t_options)
  w = None
  if band_loss_weights is not None:
    w = np.asarray(band_loss_weights, np.float64).reshape(-1)
    if w.size != path.num_bands or not np.all(np.isfinite(w)) or np.any(
        w < 0):
      raise ValueError(
          f"band_loss_weights must be {path.num_bands} finite non-negative "
          f"numbers (one per band), got {w.tolist()}.")
  sizes = None if band_batch_sizes is None else tuple(
      int(v) for v in band_batch_sizes)
  return LossSetup(t_sampling, t_options, shares, w, sizes)


def _pad(a, n):
  """a with its first row repeated to n rows (padding rows are masked)."""
  extra = n - a.shape[0]
  if not extra:
    return a
  return jnp.concatenate([a, jnp.repeat(a[:1], extra, axis=0)], axis=0)


def split_batch(batch: dict, keys, setup: LossSetup, num_devices: int):
  """The global batch as per-band sub-batches of static shapes.

  Band s gets the examples [C_s, C_s + B_s) of the global batch (C_s the
  sizes of the bands before it), so an example's band depends on its
  place in the global batch only, not on the device count. Each
  sub-batch is padded to a multiple of num_devices by repeating its first
  example with mask 0, so every device holds the same number of each
  band's examples. Returns ({str(s): {"image", "mask", ["label"]}},
  {str(s): keys}, the global count of real examples).
  """
  b = keys.shape[0]
  sizes = batch_sizes(setup.shares, b, setup.explicit_sizes)
  mask = batch.get("mask")
  mask = (jnp.ones((b,), jnp.float32) if mask is None
          else mask.astype(jnp.float32))
  groups, gkeys, lo = {}, {}, 0
  for s, n in enumerate(sizes):
    if not n:
      continue
    padded = -(-n // num_devices) * num_devices
    g = {"image": _pad(batch["image"][lo:lo + n], padded),
         "mask": jnp.concatenate([mask[lo:lo + n],
                                  jnp.zeros((padded - n,), jnp.float32)])}
    if "label" in batch:
      g["label"] = _pad(batch["label"][lo:lo + n], padded)
    groups[str(s)] = g
    gkeys[str(s)] = _pad(keys[lo:lo + n], padded)
    lo += n
  return groups, gkeys, jnp.sum(mask), sizes


def sharded_loss_and_grad(model, p: Plan, setup: LossSetup, mesh, *,
                          num_classes: int = 0, label_dropout: float = 0.0,
                          with_grad: bool = True) -> Callable:
  """The scale-adaptive loss over a global batch, data parallel.

  fn(params, batch, keys) -> (loss, aux, grads) with the contract of
  sharding.sharded_loss_and_grad (keys [B, 2] one per example, batch
  leaves [B, ...], both batch-sharded; aux: loss, band_loss_sum [S],
  band_count [S], loss_sum, mask_count). The batch is split by band
  (split_batch); each band's sub-batch runs the model once at its grid's
  resolution, all under the caller's one jit. Example i of band s:

    x0, t, label drop from its key (x0 as experiment.make_loss draws it,
      t from band_time), err_i = ||P_s v - u_t||^2 / (H W C) on the grid,
    loss = sum_s p_s / B_s sum_{i in s} w_s err_i
         = (1 / B) sum_i omega_s w_s err_i,  omega_s = p_s B / B_s,

  p_s the band's share of t, w_s the band loss weight. omega_s corrects
  the rounding of B_s, so the loss is unbiased for K-Flow's loss
  E_t[w(band(t)) ||v - u_t||^2 / (H W C)] whatever the sub-batch sizes
  (docs/method.md). With padding masks (evaluation) the sums run over
  real examples and the mean divides by their count.
  """
  path = p.path
  full = float(np.prod(path.transform.shape))
  bw = (np.ones(path.num_bands) if setup.band_loss_weights is None
        else setup.band_loss_weights)
  p_drop = float(label_dropout)

  def band_errors(params, s, g, keys):
    grid = p.grids[s]
    x1 = g["image"]

    def draw(key):
      k_loss, k_drop = jax.random.split(key)
      # The split experiment.make_loss makes: the same key gives the same
      # noise here and in the full-resolution loss.
      r_noise, r_t = jax.random.split(k_loss)
      x0 = jax.random.normal(r_noise, x1.shape[1:], jnp.float32)
      t = band_time(r_t, path, s, setup.t_sampling, **setup.t_options)
      return x0, t, k_drop
    x0, t, k_drop = jax.vmap(draw)(keys)
    y = None
    if num_classes:
      y = g["label"].astype(jnp.int32)
      if p_drop > 0:
        y = jax.vmap(lambda k, yy: models.drop_labels(
            k, yy[None], p_drop, num_classes)[0])(k_drop, y)
    z_t, u_t = coarse_pair(p, s, grid.to_coarse(x0), grid.to_coarse(x1), t)
    v = model.apply({"params": params}, z_t, t, y, train=True,
                    frame=p.frames[s])
    if v.shape != u_t.shape:
      raise ValueError(
          f"the backbone returned shape {v.shape} on band {s}'s grid, "
          f"expected {u_t.shape}.")
    v = grid.band_part(v.astype(jnp.float32), (s,))
    # Sum on the grid over the full grid's size: the full-resolution mean
    # squared error (to_coarse is an isometry on bands 0..s).
    return jnp.sum(jnp.square(v - u_t), axis=(1, 2, 3)) / full

  def local(params, groups, keys, norm, omega):
    loss_sum = jnp.zeros((), jnp.float32)
    band_sum = jnp.zeros((path.num_bands,), jnp.float32)
    band_count = jnp.zeros((path.num_bands,), jnp.float32)
    for key in sorted(groups, key=int):
      s = int(key)
      g = groups[key]
      err = band_errors(params, s, g, keys[key])
      m = g["mask"]
      loss_sum += omega[s] * float(bw[s]) * jnp.sum(err * m)
      band_sum = band_sum.at[s].add(jnp.sum(err * m))
      band_count = band_count.at[s].add(jnp.sum(m))
    # pmean over devices of loss_sum * n / count = total / count.
    loss = loss_sum * norm
    aux = {"loss": loss, "band_loss_sum": band_sum,
           "band_count": band_count, "loss_sum": loss_sum,
           "mask_count": jnp.sum(band_count)}
    return loss, aux

  def inner(params, groups, keys, norm, omega):
    if with_grad:
      (loss, aux), grads = jax.value_and_grad(local, has_aux=True)(
          params, groups, keys, norm, omega)
      grads = lax.pmean(grads, sharding.BATCH_AXES)
    else:
      (loss, aux), grads = local(params, groups, keys, norm, omega), None
    loss = lax.pmean(loss, sharding.BATCH_AXES)
    return loss, sharding.reduce_aux(aux, sharding.BATCH_AXES), grads

  smap = jax.shard_map(
      inner, mesh=mesh,
      in_specs=(P(), P(sharding.BATCH_AXES), P(sharding.BATCH_AXES), P(),
                P()),
      out_specs=(P(), P(), P()), check_vma=False)
  bsh = sharding.batch_sharding(mesh)

  def fn(params, batch, keys):
    groups, gkeys, count, sizes = split_batch(batch, keys, setup, mesh.size)
    groups, gkeys = jax.tree.map(
        lambda a: lax.with_sharding_constraint(a, bsh), (groups, gkeys))
    b = keys.shape[0]
    p_s = setup.shares / np.sum(setup.shares)
    omega = jnp.asarray([p_s[s] * b / n if n else 0.0
                         for s, n in enumerate(sizes)], jnp.float32)
    norm = mesh.size / jnp.maximum(count, 1.0)
    return smap(params, groups, gkeys, norm, omega)
  return fn


# ----------------------------------------------------------------------------
# Sampling.


def band_steps(edges, path: paths_lib.Path, t_start: float, t_end: float
               ) -> list:
  """The grid `edges` (sampling.time_grid, which holds every tau_s inside
  the span) cut at the band edges: one float32 array per band, None for a
  band outside [t_start, t_end]."""
  edges = np.asarray(edges, np.float32)
  out = []
  for s in range(path.num_bands):
    a = max(np.float32(path.tau[s]), np.float32(t_start))
    b = min(np.float32(path.tau[s + 1]), np.float32(t_end))
    out.append(edges[(edges >= a) & (edges <= b)] if b > a else None)
  return out


def make_sampler(build_velocity: Callable, p: Plan, spec) -> Callable:
  """fn(params, x0, y, t_start=0, t_end=1, num_steps=None) -> (x, stats),
  the signature of generate.make_sampler, with each band's steps at its
  own resolution.

  build_velocity(params, y, frame) -> velocity_fn(z, t) on a grid with
  that frame (guidance and class drop included). The state is kept in the
  full transform's coefficients C = T(x0): band s takes
  cz = coef_to_coarse(C) (bands 0..s on its grid), integrates
  dcz/dt = where(band s, T_g(v(T_g^-1 cz, t)), 0) over the band's steps of
  the run's time grid (fixed-step solvers; adaptive ones solve on the
  grid's image over [tau_s, tau_{s+1}] and keep only band s), and writes
  band s back. Bands below s are never written and finer bands keep their
  noise bit for bit. x = T^-1(C) at the end.

  stats: nfe (network calls over the whole span, a CFG call counting
  once), nfe_per_band [S], nfe_full_equivalent = sum_s nfe_s h_s w_s /
  (H W), num_steps.
  """
  path = p.path
  tr = path.transform
  stages = (None if sampling.is_adaptive(spec.solver)
            else sampling.SOLVERS.hook(spec.solver, "stages"))

  def run(params, x0, y, t_start=0.0, t_end=1.0, num_steps=None):
    batch = x0.shape[0]
    c = tr.forward(x0)
    if stages is not None:
      edges = sampling.time_grid(
          path, int(num_steps or spec.num_steps), t_start=t_start,
          t_end=t_end, extra_times=spec.extra_times,
          allocation=spec.step_allocation)
      per_band = band_steps(edges, path, t_start, t_end)
    else:
      per_band = band_steps(np.asarray(path.tau, np.float32), path,
                            t_start, t_end)
    nfe, steps = [], 0
    for s, grid in enumerate(p.grids):
      e = per_band[s]
      if e is None or e.size < 2:
        nfe.append(0)
        continue
      vfn = build_velocity(params, y, p.frames[s])
      small = grid.transform
      active = jnp.asarray(grid.bands == s)
      cz = grid.coef_to_coarse(c)
      if stages is not None:
        def field(cz, t, vfn=vfn, small=small, active=active):
          v = vfn(small.inverse(cz), jnp.full((batch,), t, jnp.float32))
          return jnp.where(active, small.forward(v), 0)
        cz = sampling.integrate(field, cz, e, spec.solver)
        nfe.append((e.size - 1) * stages)
        steps += e.size - 1
      else:
        def vf(z, tb, vfn=vfn, grid=grid, s=s):
          return grid.band_part(vfn(z, tb), (s,))
        z, st = sampling.sample(
            vf, path, small.inverse(cz), solver=spec.solver,
            t_start=float(e[0]), t_end=float(e[-1]),
            extra_times=spec.extra_times, rtol=spec.rtol, atol=spec.atol)
        cz = small.forward(z)
        nfe.append(st["nfe"])
        steps += st["num_steps"]
      c = jnp.where(path.band == s, grid.coef_from_coarse(cz), c)
    per = jnp.asarray(nfe, jnp.int32)
    stats = {"nfe": jnp.sum(per), "nfe_per_band": per,
             "nfe_full_equivalent": jnp.sum(
                 per.astype(jnp.float32) *
                 jnp.asarray(p.pixel_ratio, jnp.float32)),
             "num_steps": steps}
    if stages is not None:  # static counts stay Python numbers
      stats["nfe"] = int(sum(nfe))
      stats["nfe_full_equivalent"] = float(
          sum(n * r for n, r in zip(nfe, p.pixel_ratio)))
    return tr.inverse(c), stats
  return run


def full_velocity(build_velocity: Callable, p: Plan, params, y) -> Callable:
  """velocity_fn(x, t) at full resolution (any full-resolution sampler,
  e.g. restoration): `velocity` with the network of build_velocity."""
  def apply(z, t, yy, frame):
    del yy
    return build_velocity(params, y, frame)(z, t)
  return lambda x, t: velocity(apply, p, x, t)
