r"""Cost of scale-adaptive K-Flow against the full-resolution network.

  python -m benchmarks.adaptive_cost            # 32x32x4, DiT-S/2
  python -m benchmarks.adaptive_cost --quick    # DiT-mu/2, smoke run
  python -m benchmarks.adaptive_cost --time     # also wall-clock (median)

For S = 2 and 3 dyadic bands (orthonormal Haar with S - 1 levels and even
cut-offs, so band s lives on a 32 / 2^(S-1-s) grid) and one DiT:

* train: XLA-counted FLOPs of one loss + gradient over a batch. Full:
  losses.kflow_loss with the network on the whole batch at 32x32.
  Adaptive: adaptive.sharded_loss_and_grad, one sub-batch per band (sizes
  by the band's share of uniform t) at its grid. ratio = full / adaptive.
* sample: XLA-counted FLOPs of one network call at each band's grid; with
  the same number of steps per band, ratio = S F(32x32) / sum_s F(grid_s).
* estimate: the same ratio from DiT.analytic_flops (matmuls only): the
  numbers of the cost model (1.61x for 2 bands, 2.30x for 3 at DiT-S..XL).

One JSON line per S, then a table. XLA counts every op it sees (the
transforms, norms, the loss), not only matmuls, so the measured ratios sit
a little under the matmul estimate. --time adds the median seconds of the
jitted train step and of the forward calls (meaningful on an otherwise idle
accelerator; on a shared CPU they carry its noise).
"""
import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import adaptive
from kflow_jax import flops
from kflow_jax import kamp
from kflow_jax import losses
from kflow_jax import models
from kflow_jax import paths
from kflow_jax import sharding

SHAPE = (32, 32, 4)


def _flops(fn, *args) -> float:
  return float(flops.step_flops(jax.jit(fn).lower(*args).compile()))


def _median_s(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(num_bands: int, size: str, batch: int, timing: bool) -> dict:
  tr = kamp.get("wavelet", SHAPE, wavelet="haar", levels=num_bands - 1)
  path = paths.make_path(tr, cutoffs=kamp.even_cutoffs(num_bands))
  model = models.get("dit", size=size, patch_size=2)
  plan = adaptive.plan(path, model)
  params = nn.meta.unbox(model.init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE), jnp.zeros((1,))))[
          "params"]
  x1 = jax.random.normal(jax.random.PRNGKey(1), (batch,) + SHAPE)
  keys = jax.random.split(jax.random.PRNGKey(2), batch)

  def full_loss(params, x1, keys):
    vfn = lambda x, t, y: model.apply({"params": params}, x, t, y,
                                      train=True)
    return losses.kflow_loss(vfn, path, x1, keys[0])[0]
  full_step = jax.value_and_grad(full_loss)
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  setup = adaptive.make_loss_setup(path)
  adaptive_step = adaptive.sharded_loss_and_grad(model, plan, setup, mesh)
  batch_arg = {"image": x1}
  train_full = _flops(full_step, params, x1, keys)
  train_adaptive = _flops(adaptive_step, params, batch_arg, keys)

  t = jnp.full((batch,), 0.5)
  fwd, est = [], []
  for g, f in zip(plan.grids, plan.frames):
    z = jnp.zeros((batch,) + g.shape)
    fwd.append(_flops(lambda p, z, t, f=f: model.apply(
        {"params": p}, z, t, frame=f), params, z, t))
    est.append(model.analytic_flops(z.shape))
  out = {
      "bands": num_bands, "model": f"DiT-{size}/2", "batch": batch,
      "grids": [f"{g.shape[0]}x{g.shape[1]}" for g in plan.grids],
      "sub_batches": list(adaptive.batch_sizes(setup.shares, batch)),
      "train_gflops_full": train_full / 1e9,
      "train_gflops_adaptive": train_adaptive / 1e9,
      "train_ratio": train_full / train_adaptive,
      "forward_gflops_per_grid": [v / 1e9 for v in fwd],
      "sample_ratio": num_bands * fwd[-1] / sum(fwd),
      "estimate_ratio": num_bands * est[-1] / sum(est),
  }
  if timing:
    jit_full = jax.jit(full_step)
    jit_adaptive = jax.jit(adaptive_step)
    out["train_s_full"] = _median_s(jit_full, params, x1, keys)
    out["train_s_adaptive"] = _median_s(jit_adaptive, params, batch_arg,
                                        keys)
    out["train_time_ratio"] = out["train_s_full"] / out["train_s_adaptive"]
    fwd_s = []
    for g, f in zip(plan.grids, plan.frames):
      call = jax.jit(lambda p, z, t, f=f: model.apply({"params": p}, z, t,
                                                       frame=f))
      fwd_s.append(_median_s(call, params, jnp.zeros((batch,) + g.shape),
                             t))
    out["forward_s_per_grid"] = fwd_s
    out["sample_time_ratio"] = num_bands * fwd_s[-1] / sum(fwd_s)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", default="S", help="DiT size (models/dit.py)")
  p.add_argument("--batch", type=int, default=48,
                 help="divisible by 2 and 3: sub-batches exactly by share")
  p.add_argument("--bands", default="2,3")
  p.add_argument("--time", action="store_true", help="also wall-clock")
  p.add_argument("--quick", action="store_true", help="DiT-mu smoke run")
  args = p.parse_args(argv)
  size, batch = ("mu", 12) if args.quick else (args.size, args.batch)
  rows = []
  for s in (int(v) for v in args.bands.split(",")):
    rows.append(measure(s, size, batch, args.time))
    print(json.dumps(rows[-1]), flush=True)
  print("\n| bands | grids | model | train GFLOPs full / adaptive | train "
        "ratio | sample ratio | estimate |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['bands']} | {', '.join(r['grids'])} | {r['model']} | "
          f"{r['train_gflops_full']:.2f} / {r['train_gflops_adaptive']:.2f} "
          f"| {r['train_ratio']:.2f}x | {r['sample_ratio']:.2f}x | "
          f"{r['estimate_ratio']:.2f}x |")
  return rows


if __name__ == "__main__":
  main()
