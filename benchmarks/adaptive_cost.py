r"""Cost of scale-adaptive K-Flow against full-resolution K-Flow and plain
flow matching, on one backbone and one data shape.

  python -m benchmarks.adaptive_cost            # 32x32x4, DiT-S/2, 2,3,4 bands
  python -m benchmarks.adaptive_cost --time     # also wall-clock, interleaved
  python -m benchmarks.adaptive_cost --data=digits --time
                                                # configs/digits.py: U-Net-mu,
                                                # 16x16x1, haar (the arms the
                                                # digits experiment trains)
  python -m benchmarks.adaptive_cost --data=mnist --bands=3,4
                                                # configs/mnist.py:cond,
                                                # U-Net-mu, 32x32x1
  python -m benchmarks.adaptive_cost --data=mnist --bands=3 --backbone=dit
                                                # the same with DiT-ti/2
  python -m benchmarks.adaptive_cost --quick    # DiT-mu/2, smoke run

Three arms, built by experiment.setup exactly as training builds them:
  fm        plain flow matching: identity transform, one band;
  full      K-Flow at full resolution: orthonormal Haar with S - 1 levels
            and even cut-offs (band s lives on a H / 2^(S-1-s) grid);
  adaptive  the same run with config.model.scale_adaptive=True.
Same backbone, batch, optimizer and sampler settings. Per S (--bands):

* train: XLA-counted FLOPs of one loss + gradient over the batch
  (run.field.loss_and_grad: for adaptive one sub-batch per band, sizes by
  the band's share of uniform t, at its grid). train_ratio = full /
  adaptive. step_gflops_*: the whole train step (train.make_run_step:
  optimizer and EMA included), the one that is timed.
* sample: XLA-counted FLOPs of one network call at each band's grid; with
  the same number of steps per band, sample_ratio = S F(full) / sum_s
  F(grid_s). sample_gflops_*: a whole Euler sampler run (--sample_steps in
  total, the run's own time grid, so every arm takes the same steps and
  the adaptive one the same per band) through the runs' own samplers
  (run.field.sampler: generate/sampler.py, or flow/adaptive_sampler.py for
  adaptive). XLA counts a loop's body once whatever its trip count, so that
  count is taken on the sampler built with its step loops unrolled
  (sampler(spec, unroll=True)); the timed sampler is the ordinary, rolled
  one.
* estimate: the ratio from DiT.analytic_flops (matmuls only; the cost
  model's 1.61x, 2.30x, 3.02x for 2, 3, 4 bands at DiT-S..XL), or from the
  pixel counts for a backbone without that count (the U-Net).

--time adds wall-clock: the three train steps take turns one step each
(round robin, --rounds), then the three whole sampler runs likewise; the
medians and the ratios fm / adaptive and full / adaptive go next to the
FLOP ratios and the estimate. Times are meaningful on an otherwise idle
accelerator; on a shared CPU only ratios measured side by side are, and
they carry its noise. One JSON line per S, then the tables.
"""
import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import loop
from kflow_jax.flow import adaptive_loss
from kflow_jax.flow import adaptive_sampler
from kflow_jax.run import experiment
from kflow_jax.infra import flops
from kflow_jax.flow import sampling
from kflow_jax.infra import sharding
from kflow_jax.modes import train

SHAPE = (32, 32, 4)
ARMS = ("fm", "full", "adaptive")
# The cost model's estimates (docs/method.md, 2 / 3 / 4 dyadic bands).
COST_MODEL = {2: 1.61, 3: 2.30, 4: 3.02}


def arm_config(data: str, arm: str, num_bands: int, *, size: str,
               batch, sample_steps: int, sample_batch, dit: bool = False,
               band_batch_sizes=None):
  """The config of one arm. dit: configs/digits.py's run with a DiT of
  `size` (patch 2) on an input shape given by `build_run`; digits: the
  shipped configs/digits.py (U-Net-mu); mnist: configs/mnist.py:cond.
  `dit` puts a DiT of `size` (patch 2) in the digits or mnist run.
  batch / sample_batch None keep the config's. band_batch_sizes: the
  scale-adaptive arm's examples per band (config.loss.band_batch_sizes;
  None: in proportion to the bands' shares of t)."""
  transform = "identity" if arm == "fm" else "wavelet"
  if data == "mnist":
    # The class-conditional runs experiments/half_cost.py trains and
    # samples (CFG: two network calls per step in every arm alike).
    c = loop.load_config("mnist", f"cond,transform={transform}")
  else:
    c = loop.load_config("digits", f"transform={transform}")
  if data == "dit" or dit:
    loop.set_model(c, name="dit", size=size, patch_size=2, dtype="float32")
  if arm != "fm":
    c.transform.levels = num_bands - 1
    c.path.num_scales = num_bands
  c.model.scale_adaptive = arm == "adaptive"
  if arm == "adaptive" and band_batch_sizes is not None:
    c.loss.band_batch_sizes = tuple(int(v) for v in band_batch_sizes)
  if batch is not None:
    c.batch_size = int(batch)
  c.sample.solver = "euler"
  c.sample.num_steps = int(sample_steps)
  if sample_batch is not None:
    c.sample.batch_size = int(sample_batch)
  return c


def build_run(data: str, config):
  """experiment.setup on one device (nothing written); for dit the input
  shape is SHAPE, not the data set's."""
  return experiment.setup(config, None, "tool", devices=jax.devices()[:1],
                          shape=SHAPE if data == "dit" else None)


def _flops(fn, *args) -> float:
  return float(flops.step_flops(jax.jit(fn).lower(*args).compile()))


def _train_batch(run):
  b = int(run.config.batch_size)
  rng = np.random.default_rng(0)
  return sharding.global_batch(run.mesh, {
      "image": rng.standard_normal((b,) + tuple(run.info.shape)).astype(
          np.float32),
      "label": np.zeros((b,), np.int32)})


def _sample_noise(run):
  return jax.random.normal(jax.random.PRNGKey(3), (
      int(run.spec.batch_size),) + tuple(run.info.shape), jnp.float32)


def _sample_labels(run):
  """Labels of a sampler run: class 0 for a conditional run (its guided
  field, two network calls per step), None otherwise."""
  if not run.num_classes:
    return None
  return jnp.zeros((int(run.spec.batch_size),), jnp.int32)


def loss_flops(run, params, batch) -> float:
  """FLOPs of the run's loss and gradient over `batch` (no update)."""
  keys = jax.random.split(jax.random.PRNGKey(2),
                          int(run.config.batch_size))
  return _flops(run.field.loss_and_grad, params, batch, keys)


def sample_flops(run, params) -> float:
  """FLOPs of one whole sampler run, counted with its step loops unrolled
  (XLA's cost analysis counts a loop's body once, whatever its trip
  count)."""
  sampler = run.field.sampler(run.spec, unroll=True)
  y = _sample_labels(run)
  return _flops(lambda p, x: sampler(p, x, y)[0], params,
                _sample_noise(run))


def sampler_nfe(run) -> tuple:
  """(network calls of a sampler run, per band): the Euler steps of the
  run's time grid, which both samplers walk (adaptive cuts it at the band
  edges)."""
  edges = sampling.time_grid(run.path, int(run.spec.num_steps),
                             extra_times=run.spec.extra_times,
                             allocation=run.spec.step_allocation)
  per = [0 if e is None else e.size - 1
         for e in adaptive_sampler.band_steps(edges, run.path, 0.0, 1.0)]
  return len(edges) - 1, per


def grid_flops(run, params) -> tuple:
  """Per band of the adaptive plan: (XLA FLOPs of one network call at its
  grid, the estimate's cost of it and its kind)."""
  b = int(run.config.batch_size)
  t = jnp.full((b,), 0.5)
  fwd, est = [], []
  model = run.model
  counted = hasattr(model, "analytic_flops")
  plan = run.field.plan
  for g, f in zip(plan.grids, plan.frames):
    z = jnp.zeros((b,) + g.shape)
    fwd.append(_flops(lambda p, z, t, f=f: model.apply(
        {"params": p}, z, t, frame=f), params, z, t))
    est.append(model.analytic_flops(z.shape) if counted
               else float(np.prod(g.shape[:2])))
  return fwd, est, ("DiT matmuls" if counted else "pixels")


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def round_robin(calls: dict, rounds: int) -> dict:
  """{name: median seconds}: each call once per round, in turn, so load
  from other processes hits every arm alike. The calls are compiled ahead,
  so there is no warm-up call; the median drops a slow first round."""
  times = {k: [] for k in calls}
  for _ in range(rounds):
    for k, fn in calls.items():
      times[k].append(_timed(fn))
  return {k: statistics.median(v) for k, v in times.items()}


def measure(num_bands: int, *, data: str = "dit", size: str = "S",
            batch=None, timing: bool = False, rounds: int = 3,
            time_batch=None, sample_steps: int = 12, sample_batch=None,
            dit: bool = False, band_batch_sizes=None) -> dict:
  """One row: FLOPs (and with timing, medians) of the three arms."""
  if data == "dit" and batch is None:
    batch = 48
  cfg = functools.partial(arm_config, data, num_bands=num_bands, size=size,
                          sample_steps=sample_steps,
                          sample_batch=sample_batch, dit=dit,
                          band_batch_sizes=band_batch_sizes)
  runs = {a: build_run(data, cfg(a, batch=batch)) for a in ARMS}
  ad, full = runs["adaptive"], runs["full"]
  params = full.init_state().params  # one set of weights for every arm
  batches = {a: _train_batch(r) for a, r in runs.items()}
  b = int(full.config.batch_size)
  loss = {a: loss_flops(r, params, batches[a]) for a, r in runs.items()}
  fwd, est, kind = grid_flops(ad, params)
  samp = {a: sample_flops(r, params) for a, r in runs.items()}
  per_band = sampler_nfe(ad)[1]
  if sampler_nfe(runs["fm"])[0] != sum(per_band):
    raise AssertionError("the arms' samplers take different step counts.")
  steps = {a: train.make_run_step(r) for a, r in runs.items()}
  states = {a: r.init_state() for a, r in runs.items()}
  step_c = {a: steps[a].lower(states[a], batches[a]).compile()
            for a in ARMS}
  out = {
      "bands": num_bands, "data": data,
      "model": (f"DiT-{size}/2" if data == "dit" or dit else
                f"{full.config.model.name}-{full.config.model.size}"),
      "shape": list(full.info.shape), "batch": b,
      "grids": list(ad.field.band_grids),
      "sub_batches": list(adaptive_loss.batch_sizes(
          adaptive_loss.band_shares(ad.path), b,
          ad.config.loss.band_batch_sizes)),
      "train_gflops_fm": loss["fm"] / 1e9,
      "train_gflops_full": loss["full"] / 1e9,
      "train_gflops_adaptive": loss["adaptive"] / 1e9,
      "train_ratio": loss["full"] / loss["adaptive"],
      "train_ratio_fm": loss["fm"] / loss["adaptive"],
      "forward_gflops_per_grid": [v / 1e9 for v in fwd],
      "sample_ratio": num_bands * fwd[-1] / sum(fwd),
      "estimate_ratio": num_bands * est[-1] / sum(est),
      "estimate_kind": kind,
      # The cost model is a DiT-x/2 statement on 32x32x4.
      "cost_model": COST_MODEL.get(num_bands) if data == "dit" else None,
      "sample_steps": int(sample_steps),
      "sample_batch": int(full.spec.batch_size),
      "nfe": sampler_nfe(full)[0],
      "nfe_per_band": per_band,
      "nfe_full_equivalent": float(np.dot(per_band,
                                          ad.field.plan.pixel_ratio)),
  }
  for a in ARMS:
    out[f"step_gflops_{a}"] = flops.step_flops(step_c[a]) / 1e9
    out[f"sample_gflops_{a}"] = samp[a] / 1e9
  for kind_ in ("step", "sample"):
    for ref in ("fm", "full"):
      out[f"{kind_}_flops_ratio_{ref}"] = (out[f"{kind_}_gflops_{ref}"] /
                                           out[f"{kind_}_gflops_adaptive"])
  if timing:
    out.update(time_arms(data, runs, params, step_c, states, batches,
                         rounds, time_batch, cfg))
  return out


def time_arms(data, runs, params, step_c, states, batches, rounds,
              time_batch, cfg) -> dict:
  """Interleaved medians of the train step and of a whole sampler run."""
  if time_batch is not None and int(time_batch) != int(
      runs["full"].config.batch_size):
    # The timed step at its own batch: rebuild the runs and steps there.
    runs = {a: build_run(data, cfg(a, batch=time_batch)) for a in ARMS}
    batches = {a: _train_batch(r) for a, r in runs.items()}
    states = {a: r.init_state() for a, r in runs.items()}
    step_c = {a: train.make_run_step(r).lower(states[a], batches[a])
              .compile() for a, r in runs.items()}
  live = dict(states)

  def step_call(a):
    def call():
      live[a], m = step_c[a](live[a], batches[a])
      return m
    return call
  train_s = round_robin({a: step_call(a) for a in ARMS}, rounds)
  samplers = {}
  for a, r in runs.items():
    x0 = _sample_noise(r)
    jitted = jax.jit(lambda p, x, s=r.field.sampler(r.spec),
                     y=_sample_labels(r): s(p, x, y)[0])
    compiled = jitted.lower(params, x0).compile()
    samplers[a] = functools.partial(compiled, params, x0)
  sample_s = round_robin(samplers, rounds)
  out = {"time_batch": int(runs["full"].config.batch_size),
         "rounds": int(rounds)}
  for a in ARMS:
    out[f"train_s_{a}"] = train_s[a]
    out[f"sample_s_{a}"] = sample_s[a]
  for ref in ("fm", "full"):
    out[f"train_time_ratio_{ref}"] = train_s[ref] / train_s["adaptive"]
    out[f"sample_time_ratio_{ref}"] = sample_s[ref] / sample_s["adaptive"]
  # The name the first version of this benchmark gave full / adaptive.
  out["train_time_ratio"] = out["train_time_ratio_full"]
  return out


def tables(rows) -> str:
  """The FLOP table (as before), and the three arms side by side."""
  lines = [
      "| bands | grids | model | train GFLOPs full / adaptive | train "
      "ratio | sample ratio | estimate |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['bands']} | {', '.join(r['grids'])} | {r['model']} | "
        f"{r['train_gflops_full']:.2f} / {r['train_gflops_adaptive']:.2f} "
        f"| {r['train_ratio']:.2f}x | {r['sample_ratio']:.2f}x | "
        f"{r['estimate_ratio']:.2f}x |")
  timed = all("train_s_fm" in r for r in rows)
  head = ("| bands | what | FLOPs fm / full / adaptive (G) | FLOPs ratio "
          "fm/ad, full/ad |")
  sep = "|---|---|---|---|"
  if timed:
    head += " seconds fm / full / adaptive | time ratio fm/ad, full/ad |"
    sep += "---|---|"
  head += " estimate (cost model) |"
  sep += "---|"
  lines += ["", head, sep]
  for r in rows:
    est = f"{r['estimate_ratio']:.2f}x" + (
        f" ({r['cost_model']:.2f}x)" if r["cost_model"] else "")
    for what, key in (("train step", "step"), ("sampler run", "sample")):
      g = [r[f"{key}_gflops_{a}"] for a in ARMS]
      line = (f"| {r['bands']} | {what} | {g[0]:.4g} / {g[1]:.4g} / "
              f"{g[2]:.4g} | {r[f'{key}_flops_ratio_fm']:.2f}x, "
              f"{r[f'{key}_flops_ratio_full']:.2f}x |")
      if timed:
        tk = "train" if key == "step" else "sample"
        s = [r[f"{tk}_s_{a}"] for a in ARMS]
        line += (f" {s[0]:.3g} / {s[1]:.3g} / {s[2]:.3g} | "
                 f"{r[f'{tk}_time_ratio_fm']:.2f}x, "
                 f"{r[f'{tk}_time_ratio_full']:.2f}x |")
      lines.append(line + f" {est} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", default="dit", choices=("dit", "digits",
                                                   "mnist"),
                 help="dit: DiT-<size>/2 on 32x32x4; digits: "
                 "configs/digits.py (U-Net-mu, 16x16x1, its batch 64); "
                 "mnist: configs/mnist.py:cond (U-Net-mu, 32x32x1)")
  p.add_argument("--size", default=None,
                 help="DiT size (models/dit.py; default S for --data=dit, "
                 "ti with --backbone=dit)")
  p.add_argument("--backbone", default=None, choices=("dit",),
                 help="dit: a DiT-<size>/2 in the digits or mnist run in "
                 "place of its U-Net (experiments/half_cost.py's DiT arms)")
  p.add_argument("--batch", type=int, default=None,
                 help="train batch of the FLOP counts (default 48 for dit: "
                 "divisible by 2, 3, 4, so sub-batches are exactly by "
                 "share; the config's for digits)")
  p.add_argument("--bands", default=None,
                 help="comma-separated band counts (default 2,3,4 for dit, "
                 "2 for digits: its shipped config)")
  p.add_argument("--time", action="store_true", help="also wall-clock")
  p.add_argument("--rounds", type=int, default=3,
                 help="round-robin rounds of the timing (median)")
  p.add_argument("--time_batch", type=int, default=None,
                 help="train batch of the timed steps (default: dit 12, a "
                 "CPU-sized batch; digits its config's)")
  p.add_argument("--sample_steps", type=int, default=None,
                 help="Euler steps of a sampler run in total (default: dit "
                 "12, digits its config's 40)")
  p.add_argument("--sample_batch", type=int, default=None,
                 help="samples per sampler run (default: dit 4, digits its "
                 "config's)")
  p.add_argument("--band_batch_sizes", default=None,
                 help="comma-separated examples per band of the "
                 "scale-adaptive arm (config.loss.band_batch_sizes; they "
                 "must sum to the batch); default: by the bands' shares")
  p.add_argument("--quick", action="store_true", help="DiT-mu smoke run")
  args = p.parse_args(argv)
  dit = args.data == "dit"
  if args.backbone and dit:
    raise ValueError("--backbone is for --data=digits or mnist; --data=dit "
                     "is a DiT already.")
  size = args.size or ("S" if dit else "ti")
  batch = args.batch
  bands = args.bands or ("2,3,4" if dit else "2")
  time_batch, sample_batch = args.time_batch, args.sample_batch
  sample_steps = args.sample_steps or (12 if dit else 40)
  if dit and time_batch is None:
    time_batch = 12
  if dit and sample_batch is None:
    sample_batch = 4
  rounds = args.rounds
  if args.quick:
    size = "mu"
    batch = 12 if dit else 16
    time_batch = batch
    sample_batch = args.sample_batch or 2
    sample_steps = args.sample_steps or 4
    rounds = 1
  if rounds < 1:
    raise ValueError(f"--rounds must be >= 1, got {rounds}.")
  rows = []
  for s in (int(v) for v in bands.split(",")):
    rows.append(measure(s, data=args.data, size=size, batch=batch,
                        timing=args.time, rounds=rounds,
                        time_batch=time_batch, sample_steps=sample_steps,
                        sample_batch=sample_batch,
                        dit=args.backbone == "dit",
                        band_batch_sizes=(
                            None if args.band_batch_sizes is None else
                            [int(v) for v in
                             args.band_batch_sizes.split(",")])))
    print(json.dumps(rows[-1]), flush=True)
  print()
  print(tables(rows))
  return rows


if __name__ == "__main__":
  main()
