"""The scale-adaptive loss: per-band sub-batches, each at its band's grid.

docs/method.md#scale-adaptive-compute-model-loss-and-sampler. A global
batch is split by band (split_batch: sizes by each band's share of t,
batch_sizes); each band's examples draw t inside the band (band_time) and
their (x_t, u_t) on the band's coarse grid (coarse_pair), and the backbone
runs once per band at that grid. The loss weights each band by p_s B / B_s
so it is unbiased for K-Flow's loss whatever the sub-batch sizes
(sharded_loss_and_grad). The plan (grids, frames) is adaptive.py's.
"""
import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from kflow_jax.flow import adaptive
from kflow_jax.flow import losses
from kflow_jax.flow import paths as paths_lib
from kflow_jax.infra import sharding


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


def allocation_shares(shares, rms, costs) -> np.ndarray:
  """float64 [S]: the shares of a batch's examples per band that make the
  stratified loss (split_batch, omega) least noisy for what a step costs.

  With B_s examples of band s, each costing c_s (its grid's share of the
  full grid's pixels), Var(L_hat) = sum_s p_s^2 sigma_s^2 / B_s; at a fixed
  cost sum_s c_s B_s it is smallest for B_s ~ p_s sigma_s / sqrt(c_s)
  (Lagrange; Neyman's allocation with costs). sigma_s is taken as `rms`,
  the root mean square of band s's per-example errors a run measured (an
  upper bound of their spread, and what importance sampling of t by
  sqrt(E[L_t^2]) uses). p_s: `shares`, the bands' shares of t. The loss
  stays unbiased whatever the split (omega); only its noise and cost move.
  """
  p, r, c = (np.asarray(v, np.float64).reshape(-1)
             for v in (shares, rms, costs))
  if not (p.size == r.size == c.size) or p.size == 0:
    raise ValueError(
        f"shares, rms and costs need one value per band, got {p.size}, "
        f"{r.size} and {c.size}.")
  bad = (~np.isfinite(r)) | (r < 0) | (~np.isfinite(c)) | (c <= 0)
  if np.any(bad & (p > 0)):
    raise ValueError(
        f"every band with a share of t needs a finite rms >= 0 and a cost "
        f"> 0; got rms {r.tolist()}, costs {c.tolist()} (a band the run "
        "never trained has no rms: measure over more steps).")
  w = np.where(p > 0, p * r / np.sqrt(np.where(c > 0, c, 1.0)), 0.0)
  if not np.sum(w) > 0:
    raise ValueError(f"no band has a positive share and error: shares "
                     f"{p.tolist()}, rms {r.tolist()}.")
  return w / np.sum(w)


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


def coarse_pair(p: adaptive.Plan, s: int, z0, z1, t) -> tuple:
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


def sharded_loss_and_grad(model, p: adaptive.Plan, setup: LossSetup, mesh, *,
                          num_classes: int = 0, label_dropout: float = 0.0,
                          with_grad: bool = True) -> Callable:
  """The scale-adaptive loss over a global batch, data parallel.

  fn(params, batch, keys) -> (loss, aux, grads) with the contract of
  sharding.sharded_loss_and_grad (keys [B, 2] one per example, batch
  leaves [B, ...], both batch-sharded; aux: loss, band_loss_sum [S],
  band_loss_sq_sum [S], band_count [S], loss_sum, mask_count). The batch is split by band
  (split_batch); each band's sub-batch runs the model once at its grid's
  resolution, all under the caller's one jit. Example i of band s:

    x0, t, label drop from its key (losses.draw_examples, as the
      full-resolution loss draws them; t from band_time),
    err_i = ||P_s v - u_t||^2 / (H W C) on the grid,
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

    # The draw of the full-resolution loss (losses.draw_examples), t given
    # the band: the same key gives the same noise and label drop in both.
    x0, t, y = losses.draw_examples(
        keys, x1.shape[1:], lambda r: band_time(
            r, path, s, setup.t_sampling, **setup.t_options),
        g.get("label"), label_dropout=p_drop, num_classes=num_classes)
    z_t, u_t = coarse_pair(p, s, grid.to_coarse(x0), grid.to_coarse(x1), t)
    net = adaptive.in_units(
        lambda z: model.apply({"params": params}, z, t, y, train=True,
                              frame=p.frames[s]), p.frames[s], p.units)
    v = net(z_t)
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
    band_sq = jnp.zeros((path.num_bands,), jnp.float32)
    band_count = jnp.zeros((path.num_bands,), jnp.float32)
    for key in sorted(groups, key=int):
      s = int(key)
      g = groups[key]
      err = band_errors(params, s, g, keys[key])
      m = g["mask"]
      loss_sum += omega[s] * float(bw[s]) * jnp.sum(err * m)
      band_sum = band_sum.at[s].add(jnp.sum(err * m))
      band_sq = band_sq.at[s].add(jnp.sum(jnp.square(err) * m))
      band_count = band_count.at[s].add(jnp.sum(m))
    # pmean over devices of loss_sum * n / count = total / count.
    loss = loss_sum * norm
    aux = {"loss": loss, "band_loss_sum": band_sum,
           "band_loss_sq_sum": band_sq, "band_count": band_count,
           "loss_sum": loss_sum,
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


