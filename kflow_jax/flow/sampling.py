"""ODE samplers for K-Flow on band-aligned time grids, CFG, NFE counting.

Sampling integrates dx/dt = v(x, t) from t_start (0: noise) to t_end (1:
data). The field switches support at every band window edge (tau_s, or the
widened edges with overlap), so

* fixed-step solvers (euler, midpoint, heun, rk4) run on a static numpy grid
  whose edges include every such edge; a stage that lands on a step's right
  edge is evaluated at the float32 just below it, so each step sees its own
  band's field (the one-sided limit) and not the next band's;
* adaptive solvers (dopri5, tsit5, from diffrax) get the edges as jump_ts
  (diffrax 0.7.2: PIDController(jump_ts=...) builds a ClipStepSizeController)
  and report their number of function evaluations (NFE).

Band projection (project=True, docs/method.md#band-projection: v <- T^-1(1[active] * T(v))):
fixed-step solvers then carry the state in coefficient space, c = T(x), and
add dt * where(active, T(v), 0). A coefficient whose band is not active is
updated by adding exact zeros, so bands not yet reached keep their noise
bit-for-bit in coefficient space, and finished bands keep their value (in
x space T^-1(T(x)) is exact only to float round-off). Adaptive solvers keep
x and project v (round-off exact only).

Everything is jit-able with sharded inputs: the grid is static, the loop is
lax.scan, and there is no device-specific code. velocity_fn(x [B,...],
t [B]) -> v.
"""
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import paths as paths_lib
from kflow_jax.infra import registry

# Solvers by name. Fixed-step entries are one step (f, y, t0, t1, t1m) -> y
# with hook `stages` (network calls per step); adaptive entries make a diffrax
# solver when called, with hook `adaptive=True`.
SOLVERS = registry.Registry("solver", "config.sample.solver")


def _axpy(a, k, z):
  return jax.tree.map(lambda zi, ki: zi + a * ki, z, k)


@SOLVERS.register("euler", stages=1)
def _euler(f, y, t0, t1, t1m):
  del t1m
  return _axpy(t1 - t0, f(y, t0), y)


@SOLVERS.register("midpoint", stages=2)
def _midpoint(f, y, t0, t1, t1m):
  del t1m
  h = t1 - t0
  return _axpy(h, f(_axpy(0.5 * h, f(y, t0), y), t0 + 0.5 * h), y)


@SOLVERS.register("heun", stages=2)
def _heun(f, y, t0, t1, t1m):
  h = t1 - t0
  k1 = f(y, t0)
  k2 = f(_axpy(h, k1, y), t1m)
  return _axpy(0.5 * h, jax.tree.map(jnp.add, k1, k2), y)


@SOLVERS.register("rk4", stages=4)
def _rk4(f, y, t0, t1, t1m):
  h = t1 - t0
  tm = t0 + 0.5 * h
  k1 = f(y, t0)
  k2 = f(_axpy(0.5 * h, k1, y), tm)
  k3 = f(_axpy(0.5 * h, k2, y), tm)
  k4 = f(_axpy(h, k3, y), t1m)
  ks = jax.tree.map(lambda a, b, c, d: a + 2.0 * b + 2.0 * c + d,
                    k1, k2, k3, k4)
  return _axpy(h / 6.0, ks, y)




def _diffrax_solver(name):
  # diffrax is imported when an adaptive solve is built, not when this module
  # is: it is a second of every command's start-up (errors included) that
  # fixed-step sampling never needs.
  def make():
    import diffrax  # pylint: disable=g-import-not-at-top
    return getattr(diffrax, name)()
  return make


SOLVERS.register("dopri5", _diffrax_solver("Dopri5"), adaptive=True)
SOLVERS.register("tsit5", _diffrax_solver("Tsit5"), adaptive=True)


def is_adaptive(solver: str) -> bool:
  return bool(SOLVERS.hook(solver, "adaptive"))


FIXED_SOLVERS = tuple(n for n in SOLVERS.names() if not is_adaptive(n))
ADAPTIVE_SOLVERS = tuple(n for n in SOLVERS.names() if is_adaptive(n))


class Grid(NamedTuple):
  """Static step table: t0, t1 (edges) and t1m (float32 just below t1)."""
  t0: np.ndarray
  t1: np.ndarray
  t1m: np.ndarray


# ----------------------------------------------------------------------------
# Time grid.


def switch_times(path: paths_lib.Path, t_start: float = 0.0,
                 t_end: float = 1.0, extra_times: Sequence[float] = ()
                 ) -> np.ndarray:
  """Sorted float32 times strictly inside (t_start, t_end) where the field
  changes: every tau_s, every window edge and `extra_times` (e.g. the t_drop
  of a class-drop velocity)."""
  extra = np.asarray(extra_times, np.float32).reshape(-1)
  if extra.size and (extra.min() < 0 or extra.max() > 1):
    raise ValueError(f"extra_times must lie in [0, 1], got {extra.tolist()}.")
  edges = np.concatenate([np.asarray(path.tau, np.float32),
                          path.windows().reshape(-1), extra]).astype(np.float32)
  edges = np.unique(edges)
  return edges[(edges > np.float32(t_start)) & (edges < np.float32(t_end))]


def _check_span(t_start, t_end):
  if not 0.0 <= float(t_start) < float(t_end) <= 1.0:
    raise ValueError(
        f"need 0 <= t_start < t_end <= 1, got t_start={t_start}, "
        f"t_end={t_end}.")


def _split_counts(lengths, total):
  """Largest-remainder split of `total` steps by length, at least 1 each."""
  n = len(lengths)
  if total < n:
    raise ValueError(
        f"num_steps={total} is fewer than the {n} segments between band "
        "edges; every segment needs a step. Raise num_steps.")
  share = np.asarray(lengths, np.float64) / np.sum(lengths) * total
  counts = np.maximum(1, np.floor(share)).astype(int)
  while counts.sum() < total:  # give the step to the most short-changed
    counts[np.argmax(share - counts)] += 1
  while counts.sum() > total:  # the minimum of 1 overshot: take it back
    over = np.where(counts > 1, counts - share, -np.inf)
    counts[np.argmax(over)] -= 1
  return counts


def steps_by_energy(energies, num_steps: int, power: float = 0.5
                    ) -> tuple:
  """Steps per band in proportion to E_s ** power, at least one each.

  For time_grid(path, steps_per_band=...): the budget follows the band
  energies (paths.measure_band_energy) instead of the bands' time shares,
  so with uniform band times the energetic (coarse) bands still get more
  steps. power = 0.5 splits by the band's amplitude (the norm of the motion
  it has to make), 1 by its energy, 0 evenly. Largest-remainder rounding,
  as for num_steps in time_grid.
  """
  e = np.asarray(energies, np.float64).reshape(-1)
  if e.size < 1 or not np.all(np.isfinite(e)) or np.any(e <= 0):
    raise ValueError(
        f"energies must be finite and > 0 per band, got {e.tolist()}; measure "
        "them with paths.measure_band_energy(transform, batches, cutoffs).")
  if not np.isfinite(power) or power < 0:
    raise ValueError(f"power must be finite and >= 0, got {power}.")
  return tuple(int(n) for n in _split_counts(e ** float(power),
                                             int(num_steps)))


# How num_steps is split over the bands (config.sample.step_allocation).
ALLOCATIONS = ("time", "band", "cost")


def step_share(path: paths_lib.Path, t_start: float, t_end: float,
               allocation: str = "time") -> float:
  """Fraction of a [0, 1] step budget that [t_start, t_end] gets under
  `allocation` (see time_grid): its length for "time" (and "cost": this
  full-resolution sampler's bands all cost alike), the mean over bands of
  the fraction of each band inside the span for "band"."""
  if allocation in ("time", "cost"):
    return float(t_end) - float(t_start)
  tau = np.asarray(path.tau, np.float64)
  inside = np.clip(np.minimum(tau[1:], t_end) - np.maximum(tau[:-1], t_start),
                   0.0, None)
  return float(np.mean(inside / np.diff(tau)))


def time_grid(path: paths_lib.Path, num_steps: Optional[int] = None, *,
              steps_per_band: Optional[Sequence[int]] = None,
              t_start: float = 0.0, t_end: float = 1.0,
              extra_times: Sequence[float] = (),
              allocation: str = "time",
              band_costs: Optional[Sequence[float]] = None) -> np.ndarray:
  """float32 numpy step edges on [t_start, t_end] including every switch time.

  num_steps: total steps, split over the segments between switch times (at
    least one each) in proportion to their length (allocation="time"), or
    so that every band gets the same number of steps whatever its share of
    the time axis (allocation="band"; a band only partly inside the span
    gets the part's fraction of a band's share). "band" matters when band
    times are uneven: a band with 4 % of t would otherwise get 4 % of the
    steps although it moves as much noise as any other.
    allocation="cost": in proportion to length / sqrt(c_s), c_s the cost
    of one network call in band s (`band_costs`, e.g. a scale-adaptive
    band's pixel share of the full grid; None: all equal, which is
    "time"). With Euler's error in band s ~ L_s h_s = L_s^2 / n_s, the
    total sum_s L_s^2 / n_s at a fixed cost sum_s c_s n_s is smallest for
    n_s ~ L_s / sqrt(c_s): the cheap coarse grids get more steps, the
    expensive finest grid fewer.
  steps_per_band: steps per band s over [tau_s, tau_{s+1}] (the part inside
    [t_start, t_end]); window edges that fall inside a band (overlap > 0)
    split a step, so the total can exceed sum(steps_per_band).
  """
  _check_span(t_start, t_end)
  inner = switch_times(path, t_start, t_end, extra_times)
  span = np.concatenate([[np.float32(t_start)], inner,
                         [np.float32(t_end)]]).astype(np.float64)
  if (num_steps is None) == (steps_per_band is None):
    raise ValueError("pass exactly one of num_steps or steps_per_band.")
  if allocation not in ALLOCATIONS:
    raise ValueError(f"step allocation {allocation!r} is not one of "
                     f"{ALLOCATIONS} (config.sample.step_allocation).")
  if num_steps is not None:
    lengths = np.diff(span)
    tau = np.asarray(path.tau, np.float64)
    mids = (span[:-1] + span[1:]) / 2
    band = np.clip(np.searchsorted(tau, mids, side="right") - 1, 0,
                   path.num_bands - 1)
    if allocation == "band":
      # Weight each segment by 1 / (its band's length): equal per band.
      lengths = lengths / np.diff(tau)[band]
    elif allocation == "cost" and band_costs is not None:
      costs = np.asarray(band_costs, np.float64)
      if costs.shape != (path.num_bands,) or not np.all(costs > 0):
        raise ValueError(f"band_costs must be {path.num_bands} positive "
                         f"numbers, got {list(band_costs)}.")
      lengths = lengths / np.sqrt(costs[band])
    counts = _split_counts(lengths, int(num_steps))
    parts = [np.linspace(a, b, n + 1)[:-1]
             for a, b, n in zip(span[:-1], span[1:], counts)]
  else:
    steps = [int(n) for n in steps_per_band]
    if len(steps) != path.num_bands or min(steps) < 1:
      raise ValueError(
          f"steps_per_band must hold {path.num_bands} positive ints (one per "
          f"band), got {list(steps_per_band)}.")
    tau = np.asarray(path.tau, np.float64)
    parts = []
    for s, n in enumerate(steps):
      a, b = max(tau[s], t_start), min(tau[s + 1], t_end)
      if b > a:
        parts.append(np.linspace(a, b, n + 1)[:-1])
    parts.append(inner.astype(np.float64))
  grid = np.concatenate(parts + [[t_end]]).astype(np.float32)
  grid = np.unique(np.concatenate([grid, span.astype(np.float32)]))
  return grid


def make_grid(edges) -> Grid:
  edges = np.asarray(edges, np.float32)
  if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
    raise ValueError(f"grid edges must strictly increase, got {edges}.")
  t0, t1 = edges[:-1], edges[1:]
  return Grid(t0, t1, np.nextafter(t1, t0).astype(np.float32))


# ----------------------------------------------------------------------------
# Fixed-step integration.


def integrate(field: Callable, y0, edges, solver: str = "euler",
              post_step: Optional[Callable] = None, unroll: bool = False):
  """Integrates dy/dt = field(y, t_scalar) over static `edges` with lax.scan.

  post_step(y, t1) -> y, if given, runs after each step (e.g. re-imposing
  observed bands in restoration). unroll: the loop unrolled (FLOP counts).
  """
  if is_adaptive(solver):
    raise ValueError(
        f"integrate needs a fixed-step solver, got {solver!r}; valid: "
        f"{FIXED_SOLVERS}.")
  step = SOLVERS.get(solver)
  grid = make_grid(edges)

  def body(y, ts):
    t0, t1, t1m = ts
    y = step(field, y, t0, t1, t1m)
    if post_step is not None:
      y = post_step(y, t1)
    return y, None

  xs = tuple(jnp.asarray(a) for a in grid)
  y, _ = jax.lax.scan(body, y0, xs, unroll=bool(unroll))
  return y


def _batched_t(t, batch):
  return jnp.full((batch,), t, jnp.float32)


def coefficient_field(velocity_fn, path, batch):
  """Projected field in coefficient space: where(active(t), T(v), 0)."""
  tr = path.transform

  def field(c, t):
    tb = _batched_t(t, batch)
    v = velocity_fn(tr.inverse(c), tb)
    return jnp.where(paths_lib.active_mask(path, tb), tr.forward(v), 0.0)
  return field


# ----------------------------------------------------------------------------
# Entry point.


def sample(velocity_fn: Callable, path: paths_lib.Path, x0: jax.Array, *,
           solver: str = "euler", num_steps: Optional[int] = None,
           steps_per_band: Optional[Sequence[int]] = None,
           project: bool = False, t_start: float = 0.0, t_end: float = 1.0,
           init_in_coefficients: bool = False,
           return_coefficients: bool = False, return_stats: bool = False,
           post_step: Optional[Callable] = None,
           rtol: float = 1e-5, atol: float = 1e-5, dt0: Optional[float] = None,
           max_steps: int = 4096, record_steps: bool = False,
           extra_times: Sequence[float] = (), allocation: str = "time",
           unroll: bool = False):
  """Integrates the sampling ODE from t_start to t_end.

  Args:
    velocity_fn: (x [B,H,W,C], t [B]) -> v (see cfg_velocity for labels).
    path: the paths.Path the model was trained with.
    x0: start state [B,H,W,C] (noise when t_start = 0); coefficients
      [B, *coef_shape] when init_in_coefficients (requires project).
    solver: one of SOLVERS.
    num_steps / steps_per_band: fixed-step budget (see time_grid); one needed
      by fixed-step solvers.
    allocation: how num_steps is split over the bands, "time" or "band"
      (see time_grid).
    project: band projection of v (see module doc).
    t_start, t_end: integration span inside [0, 1].
    return_coefficients: return the final coefficient state (needs project).
    return_stats: also return stats for fixed-step solvers.
    post_step: fixed-step solvers only, (y, t1) -> y after every step (y in
      coefficient space when project).
    rtol, atol, dt0, max_steps: adaptive solvers (dt0 default: 1/64).
    record_steps: adaptive solvers also return the accepted step end times
      (stats["step_ts"], padded with inf).
    extra_times: more times where velocity_fn switches (grid edges for
      fixed-step solvers, jump times for adaptive ones), e.g. [t_drop].
    unroll: fixed-step solvers: the step loop unrolled (see integrate).

  Returns:
    x (or coefficients) for fixed-step solvers, (x, stats) for adaptive ones
    or when return_stats. stats: {"nfe", "num_steps", ...}.
  """
  SOLVERS.get(solver)  # a clear error for an unknown name
  _check_span(t_start, t_end)
  if (init_in_coefficients or return_coefficients) and not project:
    raise ValueError(
        "init_in_coefficients / return_coefficients need project=True (the "
        "coefficient-space state is used only with band projection).")
  batch = x0.shape[0]
  if is_adaptive(solver):
    if post_step is not None or init_in_coefficients or return_coefficients:
      raise ValueError(
          "post_step and coefficient-space state are for fixed-step solvers; "
          f"use one of {FIXED_SOLVERS} or drop them.")
    return _sample_adaptive(velocity_fn, path, x0, solver, project, t_start,
                            t_end, rtol, atol, dt0, max_steps, record_steps,
                            extra_times)
  edges = time_grid(path, num_steps, steps_per_band=steps_per_band,
                    t_start=t_start, t_end=t_end, extra_times=extra_times,
                    allocation=allocation)
  tr = path.transform
  if project:
    c0 = x0 if init_in_coefficients else tr.forward(x0)
    field = coefficient_field(velocity_fn, path, batch)
    c = integrate(field, c0, edges, solver, post_step, unroll)
    out = c if return_coefficients else tr.inverse(c)
  else:
    field = lambda x, t: velocity_fn(x, _batched_t(t, batch))
    out = integrate(field, x0.astype(jnp.float32), edges, solver, post_step,
                    unroll)
  if not return_stats:
    return out
  n = len(edges) - 1
  return out, {"nfe": n * SOLVERS.hook(solver, "stages"), "num_steps": n}


def _sample_adaptive(velocity_fn, path, x0, solver, project, t_start, t_end,
                     rtol, atol, dt0, max_steps, record_steps, extra_times):
  """diffrax solve with the switch times as jump_ts.

  Step sizes are shared by the whole batch (the error norm is over the batch,
  as in torchdiffeq-based LFM sampling).

  NFE: dopri5 and tsit5 have 7 stages with first-same-as-last, so each
  attempted step (accepted or rejected) costs 6 evaluations, plus one to
  start at t_start and one to restart after each jump. A rejected step right
  after the start or a jump re-evaluates its first stage once more, which
  diffrax does not report; the count is then a lower bound by that number.
  """
  import diffrax  # pylint: disable=g-import-not-at-top
  batch = x0.shape[0]

  def vf(t, x, args):
    del args
    tb = _batched_t(t, batch)
    v = velocity_fn(x, tb)
    return paths_lib.project_velocity(path, v, tb) if project else v

  jumps = switch_times(path, t_start, t_end, extra_times)
  controller = diffrax.PIDController(
      rtol=rtol, atol=atol,
      jump_ts=jnp.asarray(jumps) if jumps.size else None)
  subs = [diffrax.SubSaveAt(t1=True)]
  if record_steps:
    subs.append(diffrax.SubSaveAt(steps=True, fn=lambda t, y, args: t))
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(vf), SOLVERS.get(solver)(), float(t_start),
      float(t_end), 1.0 / 64 if dt0 is None else float(dt0),
      x0.astype(jnp.float32), stepsize_controller=controller,
      saveat=diffrax.SaveAt(subs=subs), max_steps=int(max_steps))
  st = sol.stats
  stats = {
      "nfe": 6 * st["num_steps"] + 1 + jumps.size,
      "num_steps": st["num_steps"],
      "num_accepted_steps": st["num_accepted_steps"],
      "num_rejected_steps": st["num_rejected_steps"],
  }
  if record_steps:
    stats["step_ts"] = sol.ys[1]
  return sol.ys[0][0], stats
