"""The scale-adaptive sampler: each band's steps at its band's grid.

docs/method.md#scale-adaptive-compute-model-loss-and-sampler. The state is
kept in the full transform's coefficients; band s is integrated on its
coarse grid (adaptive.Plan) over its share of the run's time grid and
written back, so bands below s are never written and finer bands keep
their noise bit for bit. Stats count network calls per band and their
full-resolution equivalent.
"""
from typing import Callable

import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import adaptive
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import sampling


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


def make_sampler(build_velocity: Callable, p: adaptive.Plan, spec,
                 unroll: bool = False) -> Callable:
  """fn(params, x0, y, t_start=0, t_end=1, num_steps=None) -> (x, stats),
  the signature of generate.sampler.make_sampler, with each band's steps
  at its own resolution.

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
  (H W), num_steps. unroll: fixed-step solvers, each band's step loop
  unrolled (sampling.integrate: FLOP counts).
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
          allocation=spec.step_allocation, band_costs=p.pixel_ratio)
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
        cz = sampling.integrate(field, cz, e, spec.solver, unroll=unroll)
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
