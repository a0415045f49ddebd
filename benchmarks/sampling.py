r"""Sampling: solvers (samples/s, NFE) and step grids (quality against NFE).

  python -m benchmarks.sampling                 # digits, 2000 training steps
  python -m benchmarks.sampling --train_steps=500 --num_samples=256
  python -m benchmarks.sampling --workdir=DIR   # keep the two trained runs;
                                                # the same flags reuse them
  python -m benchmarks.sampling --quick         # toy size (tests)

Two runs of configs/digits.py are trained by train.train_and_evaluate (the
code behind --mode=train) with the same backbone, budget and seed: K-Flow
(fourier, two bands) and plain flow matching (identity, one band). Each is
then sampled from its checkpoint (the EMA params, as --mode=sample does),
every sampler from the same noise.

1. Solvers: every solver of sampling.SOLVERS through the run's sampler,
   the sampler of --mode=sample. The fixed-step ones at one NFE budget
   (--nfe: euler takes nfe steps, midpoint and heun nfe/2, rk4 nfe/4), the
   adaptive ones at each of --tols (rtol = atol). Samples/s of the compiled
   sampler (median of --repeats calls; compilation is not counted), the NFE
   it reports and the quality of its samples.
2. Step grids at equal NFE (--sweep_solver over --sweep_nfe steps N):
     uniform  N equal steps on [0, 1], blind to the bands: a step may
              straddle a band edge, where the learned field switches;
     band     sampling.time_grid(path, N), the samplers' own grid: every
              band edge is a grid point, the steps split by the bands' time
              shares;
     energy   time_grid(path, steps_per_band=sampling.steps_by_energy(E, N,
              --energy_power)): every band edge too, the steps split by the
              band energies E measured on training data.
   With the digits config's even band times (tau = 0, 1/2, 1) the uniform
   and band grids are the same grid for even N, hence the odd default N.
   Flow matching has one band, so its three grids are one grid.
3. The NFE each K-Flow grid needs to reach flow matching's quality: the
   smallest swept NFE at which its metric is at most flow matching's at
   the largest swept NFE times (1 + --quality_tol), for random_fd and
   sliced_w2 apart (they need not agree); None when no swept NFE gets
   there. Flow matching's own row says when it gets within the tolerance
   of its best.

Quality: the download-free metrics of --mode=eval (evaluators/cheap.py) of
the samples, rounded to uint8 as --mode=eval stores them, against the
digits eval split: random_fd (Frechet distance on fixed random conv
features), sliced_w2 (pixel sliced Wasserstein-2) and the radial spectrum
errors (per band of the K-Flow cut-offs, for both runs). `data_floor`
holds the same metrics for as many training images as there are samples:
what a perfect sampler would score at this sample count.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import loop
from kflow_jax.evaluators import evaluate
from kflow_jax.run import experiment
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.data import input_pipeline
from kflow_jax.flow import paths
from kflow_jax.flow import sampling
from kflow_jax.modes import train
from kflow_jax.generate import files as samples_lib

RUNS = {"kflow": "fourier", "fm": "identity"}  # name -> digits transform
SCHEMES = ("uniform", "band", "energy")
# The metrics printed in the tables (all of cheap_metrics go to the dict).
SHOWN = ("random_fd", "sliced_w2")


def make_config(transform: str, train_steps: int, quick: bool):
  """configs/digits.py for the transform, trained train_steps steps; quick:
  its runlocal variant (DiT-mu, batch 16: with its own 6 steps, the train
  step the step benchmark compiles for `--config=digits:runlocal`, which
  run_all --quick's compilation cache then serves)."""
  c = loop.load_config("digits", f"transform={transform}"
                       + (",runlocal" if quick else ""))
  c.total_steps = int(train_steps)
  c.sample_every_steps = 0
  c.sample.at_end = False
  c.checkpoint_every_steps = int(train_steps)
  c.log_every_steps = max(1, min(int(c.log_every_steps), int(train_steps)))
  return c


def trained_run(config, workdir: str):
  """(run, params, seconds): trains config in workdir (a no-op when the
  workdir already holds the finished run) and restores it for sampling."""
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  run = experiment.setup(config, workdir, "sample")
  _, state, _ = experiment.restore(run)
  return run, experiment.inference_params(run, state), seconds


def band_energies(run, num_examples: int) -> np.ndarray:
  """Band energies of the run's transform and cut-offs on training data."""
  bs = min(256, num_examples)
  it = input_pipeline.create(run.config.input, global_batch_size=bs, seed=0)
  batches = (next(it) for _ in range(max(1, num_examples // bs)))
  return paths.measure_band_energy(run.transform, batches, run.path.cutoffs)


class Scorer:
  """Download-free metrics of float samples against the eval split."""

  def __init__(self, run, num_samples: int):
    self.run = run  # its cut-offs split the spectrum error into bands
    self.reference, _ = evaluate.reference_images(run.config)
    train_images, _ = evaluate.reference_images(run.config, "train",
                                                num_samples)
    self.floor = self.score_uint8(train_images)

  def score_uint8(self, images) -> dict:
    m = evaluate.cheap_scores(self.run, images, self.reference)
    return {k: round(float(v), 5) for k, v in m.items()}

  def __call__(self, x) -> dict:
    return self.score_uint8(samples_lib.to_uint8(np.asarray(x)))


def _segments(path) -> int:
  return 1 + len(sampling.switch_times(path))


def solver_rows(name, run, params, x0, y, score, nfe: int, tols,
                repeats: int) -> list:
  """One row per solver (and tolerance) through the run's sampler
  (run.field.sampler)."""
  rows = []
  for solver in sampling.SOLVERS.names():
    if sampling.is_adaptive(solver):
      variants = [{"rtol": float(t), "atol": float(t)} for t in tols]
    else:
      stages = int(sampling.SOLVERS.hook(solver, "stages"))
      variants = [{"num_steps": max(nfe // stages, _segments(run.path))}]
    for v in variants:
      spec = run.spec._replace(solver=solver, **v)
      fn = jax.jit(run.field.sampler(spec))
      start = time.perf_counter()
      compiled = fn.lower(params, x0, y).compile()
      compile_s = time.perf_counter() - start
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        x, stats = compiled(params, x0, y)
        jax.block_until_ready(x)
        times.append(time.perf_counter() - start)
      sec = statistics.median(times)
      row = {"model": name, "solver": solver,
             "setting": (f"tol {v['rtol']:g}" if "rtol" in v
                         else f"{v['num_steps']} steps"),
             "nfe": int(jax.device_get(stats["nfe"])),
             "samples_per_s": round(x0.shape[0] / sec, 2),
             "ms_per_nfe": round(1e3 * sec / max(1, int(
                 jax.device_get(stats["nfe"]))), 3),
             "compile_s": round(compile_s, 2)}
      row.update(score(x))
      rows.append(row)
      print(f"  {name:6s} {solver:9s} {row['setting']:10s} NFE "
            f"{row['nfe']:4d}  {row['samples_per_s']:9.2f} samples/s  "
            f"random_fd {row['random_fd']:.4f}", file=sys.stderr, flush=True)
  return rows


def make_grid_sampler(run, solver: str):
  """jit (params, x0, y, t0, t1, t1m, n) -> x.

  sampling.integrate's fixed-step integration (the same step functions and
  float32 step table, sampling.make_grid) with the table passed as data,
  padded, and n steps taken by a fori_loop: one compilation then serves
  every grid and NFE of the sweep (integrate bakes each static grid into
  its own program). benchmarks_test checks it against integrate.
  """
  step = sampling.SOLVERS.get(solver)
  spec = run.spec

  def fn(params, x0, y, t0, t1, t1m, n):
    vfn = run.field.velocity(params, y, spec)
    return integrate_on_grid(vfn, x0, (t0, t1, t1m), n, step)
  return jax.jit(fn)


def integrate_on_grid(velocity_fn, x0, table, n, step):
  """n steps of `step` over the (t0, t1, t1m) table from x0."""
  batch = x0.shape[0]
  field = lambda x, t: velocity_fn(x, jnp.full((batch,), t, jnp.float32))
  t0, t1, t1m = table
  body = lambda i, x: step(field, x, t0[i], t1[i], t1m[i])
  return jax.lax.fori_loop(0, n, body, x0.astype(jnp.float32))


def padded_table(edges, length: int):
  """(t0, t1, t1m) of the grid, each padded with 1.0 to `length`, and the
  number of steps; padding is never stepped on (n bounds the loop)."""
  g = sampling.make_grid(edges)
  pad = lambda a: jnp.asarray(np.concatenate(
      [a, np.ones(length - a.size, np.float32)]))
  return tuple(pad(a) for a in g), len(g.t0)


def grids(path, n: int, energies, power: float) -> dict:
  """The three step grids of n steps (see the module doc)."""
  out = {"uniform": np.linspace(0.0, 1.0, n + 1).astype(np.float32),
         "band": sampling.time_grid(path, n)}
  if path.num_bands > 1:
    out["energy"] = sampling.time_grid(
        path, steps_per_band=sampling.steps_by_energy(energies, n, power))
  else:
    out["energy"] = out["band"]
  return out


def sweep(runs, params, x0, y, score, solver, nfes, energies, power):
  """{run: {scheme: [{steps, nfe, metrics...}]}}: quality against NFE."""
  stages = int(sampling.SOLVERS.hook(solver, "stages"))
  length = max(nfes) + 1
  shared = None
  out = {}
  for name, run in runs.items():
    # The runs share the backbone (only the transform differs), so one
    # compiled sampler serves both when the model definitions are equal.
    if shared is None or shared[0] != run.model:
      shared = (run.model, make_grid_sampler(run, solver))
    fn = shared[1]
    schemes = SCHEMES if run.path.num_bands > 1 else ("uniform",)
    out[name] = {s: [] for s in schemes}
    for n in nfes:
      g = grids(run.path, n, energies, power)
      for s in schemes:
        table, steps = padded_table(g[s], length)
        x = fn(params[name], x0, y, *table, steps)
        row = {"steps": steps, "nfe": steps * stages}
        if s == "energy":
          row["steps_per_band"] = list(sampling.steps_by_energy(
              energies, n, power))
        row.update(score(x))
        out[name][s].append(row)
      print(f"  sweep N={n}: " + ", ".join(
          f"{name}/{s} {out[name][s][-1]['random_fd']:.4f}"
          for s in schemes), file=sys.stderr, flush=True)
  return out


def nfe_to_reach(curves, reference: dict, metric: str, tol: float) -> dict:
  """Smallest swept NFE of every curve with metric <= reference * (1+tol)."""
  target = reference[metric] * (1.0 + tol)
  out = {}
  for name, schemes in curves.items():
    for s, rows in schemes.items():
      hit = [r["nfe"] for r in rows if r[metric] <= target]
      out[f"{name}/{s}"] = min(hit) if hit else None
  return {"target": round(target, 5), "nfe": out}


def print_tables(res: dict) -> None:
  print(f"\nsampling: digits, {res['train_steps']} training steps per run, "
        f"{res['num_samples']} samples vs {res['num_reference']} eval images; "
        f"data floor random_fd {res['data_floor']['random_fd']:.4f}, "
        f"sliced_w2 {res['data_floor']['sliced_w2']:.4f}")
  print(f"{'run':6s} {'solver':9s} {'setting':11s} {'NFE':>5s} "
        f"{'samples/s':>10s} {'ms/NFE':>8s} " + " ".join(
            f"{m:>10s}" for m in SHOWN))
  for r in res["solvers"]:
    print(f"{r['model']:6s} {r['solver']:9s} {r['setting']:11s} "
          f"{r['nfe']:5d} {r['samples_per_s']:10.2f} {r['ms_per_nfe']:8.2f} "
          + " ".join(f"{r[m]:10.4f}" for m in SHOWN))
  curves = res["sweep"]
  cols = [(name, s) for name in curves for s in curves[name]]
  print(f"\n{res['sweep_solver']} step grids: random_fd (sliced_w2) against "
        f"NFE; energy: steps ~ E_s^{res['energy_power']:g}, E = "
        f"{[round(e, 2) for e in res['band_energies']]}")
  print(f"{'NFE':>5s} " + " ".join(f"{n + '/' + s:>20s}" for n, s in cols))
  for i, row in enumerate(curves[cols[0][0]][cols[0][1]]):
    print(f"{row['nfe']:5d} " + " ".join(
        f"{curves[n][s][i]['random_fd']:10.4f} "
        f"({curves[n][s][i]['sliced_w2']:.4f})".rjust(20) for n, s in cols))
  reach = res["nfe_to_fm_quality"]
  for metric, r in reach["metrics"].items():
    print(f"NFE to reach flow matching's {metric} at NFE {reach['fm_nfe']} "
          f"(<= {r['target']}): " + ", ".join(
              f"{k} {v if v is not None else 'not reached'}"
              for k, v in r["nfe"].items()))


def main(argv=None):
  """Runs the benchmark, prints its tables and returns the results dict."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="toy size (tests)")
  p.add_argument("--train_steps", type=int, default=2000,
                 help="training steps of each run (digits config: 2000)")
  p.add_argument("--workdir", default="",
                 help="keep the runs in DIR/kflow and DIR/fm (reused when "
                 "trained); default: a temporary directory")
  p.add_argument("--num_samples", type=int, default=512)
  p.add_argument("--nfe", type=int, default=32,
                 help="NFE budget of the fixed-step solvers")
  p.add_argument("--tols", default="1e-3,1e-5",
                 help="rtol = atol of the adaptive solvers, comma-separated")
  p.add_argument("--sweep_solver", default="euler")
  p.add_argument("--sweep_nfe", default="3,5,9,17,33",
                 help="steps N of the step-grid sweep, comma-separated")
  p.add_argument("--energy_power", type=float, default=0.5)
  p.add_argument("--quality_tol", type=float, default=0.05)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--solver_runs", default="kflow,fm",
                 help="runs whose solvers are timed (the sweep uses both)")
  args = p.parse_args(argv)
  if args.quick:
    args.train_steps, args.num_samples, args.nfe = 6, 16, 4
    args.tols, args.sweep_nfe, args.repeats = "1e-2", "3,5", 1
    args.solver_runs = "kflow"
  if sampling.is_adaptive(args.sweep_solver):
    raise ValueError(f"--sweep_solver needs a fixed-step solver, one of "
                     f"{sampling.FIXED_SOLVERS}.")
  nfes = sorted(int(v) for v in args.sweep_nfe.split(","))
  tols = [float(v) for v in args.tols.split(",")]
  root = args.workdir or tempfile.mkdtemp(prefix="kflow_bench_sampling_")
  try:
    runs, params, train_s = {}, {}, {}
    for name, transform in RUNS.items():
      config = make_config(transform, args.train_steps, args.quick)
      runs[name], params[name], train_s[name] = trained_run(
          config, os.path.join(root, name))
    kf = runs["kflow"]
    spec = kf.spec
    n = args.num_samples
    x0 = sampler_lib.initial_noise(kf.path, kf.info.shape, spec,
                                   jax.random.PRNGKey(spec.seed),
                                   jnp.arange(n))
    y = sampler_lib.sample_labels(kf.num_classes, jnp.arange(n))
    score = Scorer(kf, n)
    energies = band_energies(kf, int(kf.config.path.energy_examples))
    rows = []
    for name in args.solver_runs.split(","):
      run = runs[name]
      rows += solver_rows(name, run, params[name], x0, y, score, args.nfe,
                          tols, args.repeats)
    curves = sweep(runs, params, x0, y, score, args.sweep_solver, nfes,
                   energies, args.energy_power)
    fm_best = curves["fm"]["uniform"][-1]
    reach = {"fm_nfe": fm_best["nfe"], "metrics": {
        m: nfe_to_reach(curves, fm_best, m, args.quality_tol)
        for m in SHOWN}}
    res = {"data": "digits", "devices": jax.device_count(),
           "train_steps": args.train_steps,
           "train_s": {k: round(v, 1) for k, v in train_s.items()},
           "model": kf.config.model.to_dict(),
           "num_samples": n, "num_reference": int(len(score.reference)),
           "tau": list(kf.path.tau), "band_energies": [
               float(e) for e in energies],
           "energy_power": args.energy_power, "data_floor": score.floor,
           "solvers": rows, "sweep_solver": args.sweep_solver,
           "sweep": curves, "nfe_to_fm_quality": reach,
           "quality_tol": args.quality_tol}
  finally:
    if not args.workdir:
      shutil.rmtree(root, ignore_errors=True)
  print_tables(res)
  print(json.dumps({"nfe_to_fm_quality": res["nfe_to_fm_quality"]}))
  return res


if __name__ == "__main__":
  main()
