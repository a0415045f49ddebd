"""Scale-adaptive compute at half the cost, on MNIST-5k 32x32.

Does scale-adaptive K-Flow reach flow matching's quality for at most half
its training and sampling FLOPs? configs/mnist.py:cond (U-Net-mu, CFG 1.5,
each method's shipped recipe: flow matching with logit-normal t, K-Flow
with band I/O and logit-normal t per band), 800 steps of batch 64, seeds
0-2, every arm scored as experiments/mnist.py scores its arms (classifier
FD and class accuracy of 500 samples, Euler 40 steps):

  fm            plain flow matching (experiments/mnist.py's run, reused)
  adaptive3     K-Flow, Haar with 2 levels: 3 dyadic bands on 8x8, 16x16
                and 32x32 grids, uniform band times, each band's network at
                its own grid (--config.model.scale_adaptive=True)
  adaptive3_energy  the same with band times from the band energies the
                run measures (band_energy.json): tau_{s+1} - tau_s
                proportional to E_s^0.5 (--config.path.gamma=0.5), the
                rule that gives the coarse, cheap, high-energy bands more
                of t, so more of the training examples and sampling steps
  adaptive3_cost  the adaptive3 runs sampled with the "cost" step
                allocation (config.sample.step_allocation=cost: steps per
                band ~ its share of t / sqrt(the cost of a call at its
                grid), flow/sampling.time_grid): a sampling rule, no
                training of its own
  kflow3        the same 3-band K-Flow at full resolution (the cost
                scale-adaptive compute saves)
  adaptive4     4 dyadic bands (4x4 to 32x32 grids), uniform band times,
                grids as block means
  adaptive3_eqflops  adaptive3_mean trained 1900 steps: flow matching's
                training FLOPs
  adaptive3_half  those runs scored at their step-900 checkpoint: 0.47x
                flow matching's training FLOPs (mid-schedule)
  adaptive3_mean  adaptive3 with each coarse grid fed as block means
                (--config.model.coarse_units=mean: a grid of factor f holds
                f times them, so without it one set of weights meets the
                data at scales 4, 2 and 1)
  adaptive3_experts  adaptive3_mean with one U-Net per grid
                (--config.model.per_grid_experts=True): the same FLOPs per
                step, three times the parameters
  adaptive3_experts_950  the same made for 950 steps (its schedule ends
                there): 0.50x flow matching's training FLOPs
  adaptive3_alloc  adaptive3_mean with the sub-batch split the allocation
                rule (B_s ~ p_s rms_s / sqrt(c_s), kflow_jax.tools.
                band_allocation) chose from the per-band errors a 200-step
                pilot of it measured (PILOT, seed 0); the split and its
                measurement are in the result file
  adaptive3_alloc_3500  the same split made for 3500 steps: 0.49x the
                training FLOPs of flow matching at 1900 steps
  adaptive3_c2f  adaptive3_mean with a coarse-to-fine curriculum of
                per-band sub-batches (--config.loss.band_batch_phases):
                (40, 16, 8) examples on the 8x8, 16x16, 32x32 grids for
                steps 0-299, (28, 20, 16) for 300-599, then (22, 21, 21)
  adaptive3_dit, fm_dit  adaptive3_mean and flow matching with a
                DiT-ti/2 in place of the U-Net (priced by the benchmark
                with --backbone=dit)
  fm_1900       flow matching trained 1900 steps, as long as the
                equal-FLOPs arm: the reference at which every arm has more
                steps (the 1900-step scale-adaptive arm costs 0.42x of it)

At toy size (--quick) only QUICK_ARMS are run.

Seeds whose runs are not on this machine keep their records from the
previous half_cost.json (common.carry_records, by training hash).

Cost: training FLOPs per step from each run's own log (XLA's count of its
compiled step), sampling FLOPs per sample from its sampler's network calls
per band (samples.json) times XLA's count of one network call at each
band's grid (`python -m benchmarks.adaptive_cost --data=mnist --bands=3
--time`, run once; its interleaved step and sampler times give the wall
ratios measured side by side; --bands=4, and --backbone=dit for the DiT
arms, give their FLOPs, untimed).
Quality verdicts by the paired rule
(experiments/stats.py); an arm reaches flow matching when its classifier
FD is not resolved worse (or is better).

    python -m experiments.half_cost [--quick] [--root=DIR] [--out=DIR]
"""
import json
import os
import statistics
import subprocess
import sys

from experiments import common
from experiments import mnist
from experiments import stats

COND = "configs/mnist.py:cond,transform="
ADAPTIVE = ("--config.model.scale_adaptive=True",)
DIT_SIZE = "ti"
DIT = ("--config.model.name=dit", f"--config.model.size={DIT_SIZE}")
# name -> (run name, label, config, overrides, sampling options)
ARMS = {
    "fm": ("mnist_fm", "flow matching", *mnist.ARMS["fm"][1:], {}),
    "adaptive3": ("mnist_haar3_adaptive",
                  "scale-adaptive K-Flow, 3 bands, uniform band times",
                  COND + "wavelet,bands=3", ADAPTIVE, {}),
    "adaptive3_cost": ("mnist_haar3_adaptive",
                       "scale-adaptive K-Flow, 3 bands, cost step "
                       "allocation", COND + "wavelet,bands=3", ADAPTIVE,
                       {"step_allocation": "cost"}),
    "adaptive3_energy": ("mnist_haar3_adaptive_energy",
                         "scale-adaptive K-Flow, 3 bands, band times from "
                         "energy (gamma 0.5)", COND + "wavelet,bands=3",
                         ADAPTIVE + ("--config.path.gamma=0.5",), {}),
    # The coarse grids as block means (a grid of factor f holds f times
    # them): one scale on every grid for the one set of weights.
    "adaptive3_mean": ("mnist_haar3_adaptive_mean",
                       "scale-adaptive K-Flow, 3 bands, grids as block "
                       "means", COND + "wavelet,bands=3",
                       ADAPTIVE + ("--config.model.coarse_units=mean",), {}),
    "kflow3": ("mnist_haar3", "K-Flow, 3 bands, full resolution",
               COND + "wavelet,bands=3", (), {}),
    # 4 dyadic bands: 4x4, 8x8, 16x16, 32x32 grids, as block means (in
    # coefficients the 4x4 grid would hold 8 times them).
    "adaptive4": ("mnist_haar4_adaptive_mean",
                  "scale-adaptive K-Flow, 4 bands, grids as block means",
                  COND + "wavelet,bands=3",
                  ADAPTIVE + ("--config.transform.levels=3",
                              "--config.path.num_scales=4",
                              "--config.model.coarse_units=mean"), {}),
    # Flow matching's training FLOPs: 800 steps x 2.38 (the step FLOP
    # ratio of benchmarks.adaptive_cost --data=mnist --bands=3) = 1902.
    "adaptive3_eqflops": ("mnist_haar3_adaptive_mean_1900",
                          "scale-adaptive K-Flow, 3 bands, grids as block "
                          "means, flow matching's training FLOPs (1900 "
                          "steps)",
                          COND + "wavelet,bands=3",
                          # total_steps in the overrides: the run's own
                          # resolved config (its cosine schedule ends at
                          # 1900), never adaptive3_mean's run continued.
                          ADAPTIVE + ("--config.total_steps=1900",
                                      "--config.model.coarse_units=mean"),
                          {}),
    # The same runs scored at their step-900 checkpoint: 900 x 0.42 / 800 =
    # 0.47x flow matching's training FLOPs. Their cosine schedule runs to
    # 1900, so the learning rate has not decayed there: a run made for 900
    # steps would end its schedule, which usually helps, so this
    # understates what 0.47x can buy.
    "adaptive3_half": ("mnist_haar3_adaptive_mean_1900",
                       "scale-adaptive K-Flow, 3 bands, grids as block "
                       "means, the 1900-step runs at step 900",
                       COND + "wavelet,bands=3",
                       ADAPTIVE + ("--config.total_steps=1900",
                                   "--config.model.coarse_units=mean"),
                       {}),
    # adaptive3_mean with one U-Net per grid (8x8, 16x16, 32x32): the
    # same FLOPs per step, 3x the parameters.
    "adaptive3_experts": ("mnist_haar3_adaptive_mean_experts",
                          "scale-adaptive K-Flow, 3 bands, grids as block "
                          "means, one U-Net per grid",
                          COND + "wavelet,bands=3",
                          ADAPTIVE + ("--config.model.coarse_units=mean",
                                      "--config.model.per_grid_experts=True"),
                          {}),
    # The same made for 950 steps, its cosine schedule ending there:
    # 950 x 10.35 / (800 x 24.61) = 0.50x flow matching's training FLOPs.
    "adaptive3_experts_950": ("mnist_haar3_adaptive_mean_experts_950",
                              "scale-adaptive K-Flow, 3 bands, grids as "
                              "block means, one U-Net per grid, 950 steps",
                              COND + "wavelet,bands=3",
                              ADAPTIVE + ("--config.total_steps=950",
                                          "--config.model.coarse_units=mean",
                                          "--config.model.per_grid_experts"
                                          "=True"),
                              {}),
    # A coarse-to-fine curriculum of per-band sub-batches on
    # adaptive3_mean (batch 64; uniform band times give 22, 21, 21): most
    # examples on the 8x8 grid for the first 300 steps, then shifting to
    # the run's own split for the last 200. The loss is unbiased in every
    # phase; the compute per step is about 0.52x, 0.82x, 1x of
    # adaptive3_mean's (examples x grid pixels).
    "adaptive3_c2f": ("mnist_haar3_adaptive_mean_c2f",
                      "scale-adaptive K-Flow, 3 bands, grids as block "
                      "means, coarse-to-fine curriculum",
                      COND + "wavelet,bands=3",
                      ADAPTIVE + ("--config.model.coarse_units=mean",
                                  "--config.loss.band_batch_phases="
                                  "((300, 40, 16, 8), (600, 28, 20, 16))"),
                      {}),
    # adaptive3_mean with the sub-batch split the allocation rule chose
    # from a 200-step pilot's measured per-band errors (PILOT,
    # kflow_jax.tools.band_allocation); its flag is added by _overrides.
    "adaptive3_alloc": ("mnist_haar3_adaptive_mean_alloc",
                        "scale-adaptive K-Flow, 3 bands, grids as block "
                        "means, sub-batches from the measured errors",
                        COND + "wavelet,bands=3",
                        ADAPTIVE + ("--config.model.coarse_units=mean",),
                        {}),
    # The same split trained 3500 steps (its cosine schedule ending there):
    # 3500 x 6.55 / (1900 x 24.61) = 0.49x the training FLOPs of flow
    # matching at 1900 steps, with the sampling FLOPs of adaptive3_mean.
    "adaptive3_alloc_3500": ("mnist_haar3_adaptive_mean_alloc_3500",
                             "scale-adaptive K-Flow, 3 bands, grids as "
                             "block means, sub-batches from the measured "
                             "errors, 3500 steps",
                             COND + "wavelet,bands=3",
                             ADAPTIVE + ("--config.model.coarse_units=mean",
                                         "--config.total_steps=3500"),
                             {}),
    # The backbone swapped for a DiT-ti/2 (tokens, so attention, shrink
    # with the grid: 16, 64, 256 tokens on the 8x8, 16x16, 32x32 grids),
    # against flow matching with the same DiT.
    "adaptive3_dit": ("mnist_haar3_adaptive_mean_dit",
                      "scale-adaptive K-Flow, 3 bands, grids as block "
                      "means, DiT-ti/2", COND + "wavelet,bands=3",
                      ADAPTIVE + ("--config.model.coarse_units=mean",) + DIT,
                      {}),
    "fm_dit": ("mnist_fm_dit", "flow matching, DiT-ti/2",
               mnist.ARMS["fm"][1], tuple(mnist.ARMS["fm"][2]) + DIT, {}),
    # Flow matching trained as long as the equal-FLOPs arm (1900 steps):
    # at 800 steps every arm is short of steps, so a cheaper step buys
    # quality; against this reference the 1900-step scale-adaptive arm
    # costs 0.42x.
    "fm_1900": ("mnist_fm_1900", "flow matching, 1900 steps",
                mnist.ARMS["fm"][1],
                tuple(mnist.ARMS["fm"][2]) + ("--config.total_steps=1900",),
                {}),
}
# The pilot whose measured errors choose adaptive3_alloc's split: the
# adaptive3_mean recipe, seed 0, a 200-step schedule (full scale).
PILOT = ("mnist_haar3_adaptive_mean_pilot", COND + "wavelet,bands=3",
         ADAPTIVE + ("--config.model.coarse_units=mean",
                     "--config.total_steps=200"), 0, 200)
ALLOCATION = "band_allocation_mnist3.json"
# Arms trained longer (or shorter) than scale.mnist_budgets (full scale).
BUDGETS = {"adaptive3_eqflops": 1900, "adaptive3_half": 1900,
           "adaptive3_experts_950": 950, "fm_1900": 1900,
           "adaptive3_alloc_3500": 3500}
# The arms a toy-size run (--quick, CI) trains: each code path of the
# study once (flow matching, full-resolution K-Flow, the scale-adaptive
# arm and its cost step allocation, block means, the curriculum, the pilot
# and the split it chooses) and only the 3-band U-Net benchmark row. Left
# out, for CI's time: the arms that only change a schedule's length
# (BUDGETS), the gamma of the band times (energy), 4 bands (the same code
# at one more level) and, with their benchmark rows, one U-Net per grid
# and the DiT backbone (both run through the command line by their own
# tests: tests/grid_experts_test.py, tests/adaptive_test.py).
QUICK_ARMS = ("fm", "kflow3", "adaptive3", "adaptive3_cost",
              "adaptive3_mean", "adaptive3_c2f", "adaptive3_alloc")
# The arms trained with the split chosen from the pilot's measurement.
ALLOC_ARMS = ("adaptive3_alloc", "adaptive3_alloc_3500")
# The flow-matching runs the scale-adaptive arms are held against.
REFS = ("fm", "fm_1900", "fm_dit")
# A reference and the same recipe trained for fewer steps: when the longer
# run is better, the reference is not trained to saturation, which the
# answer against it says.
SHORTER = {"fm_1900": "fm"}
# Arms scored at an earlier checkpoint than their run's last (full scale).
EVAL_AT = {"adaptive3_half": 900}
QUALITY = (("classifier_fd", True), ("class_accuracy", False))
# How the answer names each quality metric.
NAMES = {"classifier_fd": "FD", "class_accuracy": "class accuracy"}
# (arm, reference): each scale-adaptive arm against flow matching, the
# allocation rule against uniform allocation, full-resolution K-Flow
# against flow matching.
PAIRS = (("adaptive3", "fm"), ("adaptive3_cost", "fm"),
         ("adaptive3_eqflops", "fm"), ("adaptive4", "fm"),
         ("adaptive4", "adaptive3_mean"),
         ("adaptive3_eqflops", "adaptive3_mean"),
         ("adaptive3_energy", "fm"), ("adaptive3_cost", "adaptive3"),
         ("adaptive3_energy", "adaptive3"), ("adaptive3_mean", "fm"),
         ("adaptive3_mean", "adaptive3"), ("adaptive3_experts", "fm"),
         ("adaptive3_experts", "adaptive3_mean"), ("adaptive3_half", "fm"),
         ("adaptive3_half", "adaptive3_mean"), ("kflow3", "fm"),
         ("adaptive3", "kflow3"), ("adaptive3_mean", "kflow3"),
         ("adaptive3_experts_950", "fm"),
         ("adaptive3_experts_950", "adaptive3_experts"),
         ("fm_1900", "fm"), ("adaptive3_eqflops", "fm_1900"),
         ("adaptive3_experts_950", "fm_1900"),
         ("adaptive3_experts", "fm_1900"), ("adaptive3_half", "fm_1900"),
         ("adaptive3_c2f", "fm"), ("adaptive3_c2f", "adaptive3_mean"),
         ("adaptive3_alloc", "fm"), ("adaptive3_alloc", "adaptive3_mean"),
         ("adaptive3_alloc_3500", "fm"), ("adaptive3_alloc_3500", "fm_1900"),
         ("adaptive3_alloc_3500", "adaptive3_eqflops"),
         ("adaptive3_dit", "fm_dit"))
BENCH = "adaptive_cost_mnist{}{}.json"
# The benchmark rows in the result file, by (bands, DiT).
BENCH_KEYS = {(3, False): "benchmark", (4, False): "benchmark_4_bands",
              (3, True): "benchmark_dit"}


def _budget(scale, arm) -> int:
  if scale.all_arms and arm in BUDGETS:
    return BUDGETS[arm]
  return max(scale.mnist_budgets)


def _eval_step(scale, arm) -> int:
  """The checkpoint an arm is scored at (its run's last, or EVAL_AT)."""
  if scale.all_arms and arm in EVAL_AT:
    return EVAL_AT[arm]
  return _budget(scale, arm)


# The curriculum at toy size (batch 8, 4 steps): one coarse-heavy phase.
QUICK_PHASES = "--config.loss.band_batch_phases=((2, 5, 2, 1),)"


def _overrides(arm, alloc, scale):
  """Arm `arm`'s overrides: ARMS', for ALLOC_ARMS with the split the
  allocation rule chose (None when there is no measurement yet), and at
  toy size the curriculum's phases for its batch. None (not run) at toy
  size for the arms not in QUICK_ARMS."""
  if not scale.all_arms and arm not in QUICK_ARMS:
    return None
  over = tuple(ARMS[arm][3])
  if arm == "adaptive3_c2f" and not scale.all_arms:
    return tuple(QUICK_PHASES if o.startswith(
        "--config.loss.band_batch_phases=") else o for o in over)
  if arm not in ALLOC_ARMS:
    return over
  return over + (alloc["flag"],) if alloc.get("flag") else None


def _train(root, scale, arm, seed, alloc):
  run, _, config, _, _ = ARMS[arm]
  over = _overrides(arm, alloc, scale)
  if over is None:
    return None
  return common.attempt(common.train, root, scale._replace(pinned=()), run,
                        config, over, seed, (_budget(scale, arm),))


def allocation(root, scale, previous: dict) -> dict:
  """The pilot's measured errors and the split the rule chose from them
  (kflow_jax.tools.band_allocation, cached under ROOT); on a machine
  without it, the previous result file's (what its runs trained with)."""
  f = os.path.join(root, ALLOCATION if scale.all_arms
                   else "quick_" + ALLOCATION)
  if os.path.exists(f):
    with open(f) as fh:
      return json.load(fh)
  if scale.report_only:
    return previous.get("allocation") or {}
  name, config, overrides, seed, steps = PILOT
  steps = steps if scale.all_arms else max(scale.mnist_budgets)
  pilot = common.train(root, scale._replace(pinned=()), name, config,
                       overrides, seed, (steps,))
  flags = [a for a in pilot.flags() if not a.startswith("--config.seed")]
  common.command(["-m", "kflow_jax.tools.band_allocation", *flags,
                  f"--config.seed={seed}"],
                 os.path.join(pilot.workdir, "band_allocation.log"))
  with open(os.path.join(pilot.workdir, "band_allocation.json")) as fh:
    out = json.load(fh)
  with open(f + ".tmp", "w") as fh:
    json.dump(out, fh, indent=1)
  os.replace(f + ".tmp", f)
  return out


def _hash(root, scale, arm, seed, alloc) -> str:
  """The training hash of arm `arm` on `seed` (what _train trains; None
  for ALLOC_ARMS without a measurement)."""
  run, _, config, _, _ = ARMS[arm]
  over = _overrides(arm, alloc, scale)
  if over is None:
    return None
  r = common.arm_run(root, scale._replace(pinned=()), run, config, over,
                     seed)
  return common.training_hash(common.resolved_config(r),
                              _budget(scale, arm))


def benchmark(root, scale, bands: int = 3, dit: bool = False,
              split=None) -> dict:
  """FLOPs (and interleaved times) of one network call per grid and of the
  three arms' train steps and sampler runs with `bands` dyadic bands, with
  the U-Net or (`dit`) the DiT arms' backbone, the scale-adaptive arm with
  sub-batches `split` when given (cached under ROOT; the split's row is
  measured again when the cached one priced another split)."""
  name = BENCH.format(bands, "_dit" if dit else "_split" if split else "")
  f = os.path.join(root, name if scale.all_arms else "quick_" + name)
  if os.path.exists(f):
    with open(f) as fh:
      row = json.load(fh)
    if not split or row.get("sub_batches") == list(split):
      return row
  if scale.report_only:
    return {}
  # Wall times only for the rows the page's side-by-side table reads.
  args = ["-m", "benchmarks.adaptive_cost", "--data=mnist",
          f"--bands={bands}"] + (["--time"] if (bands, dit) == (3, False)
                                 else []) + (
              ["--backbone=dit", f"--size={DIT_SIZE}"] if dit else []) + (
                  ["--band_batch_sizes=" + ",".join(map(str, split))]
                  if split else [])
  if not scale.all_arms:
    args.append("--quick")
  p = subprocess.run([sys.executable, *args], cwd=common.REPO,
                     env=common.env(), capture_output=True, text=True,
                     check=False)
  if p.returncode:
    raise RuntimeError(f"python {' '.join(args)} failed:\n"
                       f"{p.stderr[-3000:]}")
  row = json.loads(p.stdout.strip().splitlines()[0])
  with open(f + ".tmp", "w") as fh:
    json.dump(row, fh, indent=1)
  os.replace(f + ".tmp", f)
  return row


def _bench_key(arm) -> tuple:
  """(bands, DiT) of the benchmark row that prices arm `arm`."""
  return _bands(arm), DIT[0] in ARMS[arm][3]


def _bands(arm) -> int:
  """Bands of a K-Flow arm (3 unless overridden); flow matching's one call
  at the full grid is in every benchmark row, so it reads the 3-band one."""
  for o in ARMS[arm][3]:
    if o.startswith("--config.path.num_scales="):
      n = int(o.split("=")[1])
      # Flow matching (one band): its call is in every row.
      return 3 if n == 1 else n
  return 3


def train_cost(run, until: int) -> dict:
  """GFLOPs of a train step (XLA's count, from the run's log: its mean
  over the steps up to `until`, which a curriculum's phases make differ)
  and the median logged seconds per step (on this machine, with whatever
  else ran beside it: only the interleaved benchmark's ratios are side by
  side)."""
  rows = []
  with open(os.path.join(run.workdir, "metrics.jsonl")) as fh:
    for line in fh:
      r = json.loads(line)
      if "flops_per_step" in r and r["step"] <= until:
        rows.append(r)
  if not rows:
    return {}
  # Each row's flops_per_step is the mean over the steps since the row
  # before it.
  steps = [r["step"] for r in rows]
  spans = [b - a for a, b in zip([0] + steps[:-1], steps)]
  total = sum(n * r["flops_per_step"] for n, r in zip(spans, rows))
  return {"step_gflops": total / steps[-1] / 1e9,
          "step_s_logged": statistics.median(r["step_time_s"]
                                             for r in rows[1:] or rows)}


def sample_cost(samples_dir: str, bench: dict, guided: bool) -> dict:
  """Network calls per sample (per band for scale-adaptive runs) and the
  GFLOPs they cost: calls x one call's FLOPs at the band's grid (XLA, per
  example of the benchmark's batch), x 2 with guidance (the conditional
  and the unconditional half)."""
  with open(os.path.join(samples_dir, "samples.json")) as fh:
    s = json.load(fh)
  fwd = [g / bench["batch"] for g in bench["forward_gflops_per_grid"]]
  per_band = s.get("nfe_per_band_mean")
  calls = (sum(n * g for n, g in zip(per_band, fwd)) if per_band
           else s["nfe_mean"] * fwd[-1])
  return {"nfe": s["nfe_mean"], "nfe_per_band": per_band,
          "sample_gflops": calls * (2 if guided else 1)}


def run(scale, root, out_dir) -> dict:
  clf = common.attempt(common.classifier, root, scale, "mnist5k")
  previous = common.previous_result(out_dir, "half_cost", scale)
  # The benchmark is cached under ROOT; on a machine without it the
  # previous result file's (XLA's FLOP counts do not depend on it).
  benches = {k: common.attempt(benchmark, root, scale, *k)
             or previous.get(BENCH_KEYS[k]) or {}
             for k in sorted({_bench_key(a) for a in
                              (ARMS if scale.all_arms else QUICK_ARMS)})}
  alloc = common.attempt(allocation, root, scale, previous) or {}
  # The measured-error split's train step and sampler timed beside flow
  # matching's (full scale only: CI's time).
  split = ((scale.all_arms and alloc.get("band_batch_sizes") and
            common.attempt(benchmark, root, scale, 3, False,
                           alloc["band_batch_sizes"]))
           or previous.get("benchmark_split") or {})
  bench = benches[(3, False)]
  step = max(scale.mnist_budgets)
  per_seed, runs, costs = {}, {}, {}
  for arm in ARMS:
    per_seed[arm], runs[arm], costs[arm] = [], [], []
    for seed in scale.seeds:
      r = _train(root, scale, arm, seed, alloc)
      runs[arm].append(r)
      rec, cost = {}, {}
      opts = ARMS[arm][4]
      tag = "main" + "".join(f"_{v}" for v in opts.values())
      ev = r and clf and common.attempt(common.evaluate, r, scale,
                                        _eval_step(scale, arm), tag,
                                        sample=opts, classifier=clf)
      if ev:
        rec = {m: ev.get(m) for m, _ in QUALITY}
        cost.update(train_cost(r, _eval_step(scale, arm)))
        if benches.get(_bench_key(arm)) and ev.get("samples"):
          cost.update(sample_cost(ev["samples"], benches[_bench_key(arm)],
                                  guided=True))
        cost["eval_s"] = ev.get("seconds")
      per_seed[arm].append(rec)
      costs[arm].append(cost)
  # Runs do not outlive their machine; seeds without a run here keep the
  # records of the previous result file (same training hash), marked.
  hashes = {arm: [_hash(root, scale, arm, seed, alloc)
                  for seed in scale.seeds] for arm in ARMS}
  per_seed = common.carry_records(previous.get("per_seed", {}), per_seed,
                                  hashes, [m for m, _ in QUALITY])
  costs = common.carry_records(previous.get("costs", {}), costs, hashes, ())
  summary = {a: {m: common.mean_std([r.get(m) for r in per_seed[a]])
                 for m in [q for q, _ in QUALITY] + ["step_gflops",
                                                     "sample_gflops",
                                                     "step_s_logged"]}
             for a in ARMS}
  for a in ARMS:
    for m in ("step_gflops", "sample_gflops", "step_s_logged"):
      summary[a][m] = common.mean_std([c.get(m) for c in costs[a]])
  pairs = {}
  for a, b in PAIRS:
    # Arms that share a run but sample differently are not the same arm.
    same = ARMS[a][4] == ARMS[b][4] and all(
        common.same_run(x, y) for x, y in zip(runs[a], runs[b]))
    pairs[f"{a}-{b}"] = {
        m: stats.paired([r.get(m) for r in per_seed[a]],
                        [r.get(m) for r in per_seed[b]],
                        lower_is_better=low, same_config=same,
                        continuous=m == "classifier_fd")
        for m, low in QUALITY}
  fm_cost = {m: summary["fm"][m]["mean"] for m in ("step_gflops",
                                                   "sample_gflops")}
  ratio = lambda a, m: (None if not fm_cost[m] or summary[a][m]["mean"]
                        is None else summary[a][m]["mean"] / fm_cost[m])
  data = {"scale": scale._asdict(), "seeds": list(scale.seeds),
          "steps": step, "per_seed": per_seed, "costs": costs,
          "eval_steps": {a: _eval_step(scale, a) for a in ARMS},
          "allocation": alloc, "benchmark_split": split,
          "summary": summary, "paired": pairs, "benchmark": bench,
          **{v: benches.get(k) for k, v in BENCH_KEYS.items()
             if k != (3, False)},
          "cost_ratio_to_fm": {a: {m: ratio(a, m) for m in fm_cost}
                               for a in ARMS}}
  for a in ARMS:
    r = data["cost_ratio_to_fm"][a]["step_gflops"]
    data["cost_ratio_to_fm"][a]["run_train_flops"] = (
        None if r is None else r * _eval_step(scale, a) / _budget(scale,
                                                                  "fm"))
  label = {a: v[1] for a, v in ARMS.items()}
  ms = lambda a: (None if summary[a]["step_s_logged"]["mean"] is None
                  else summary[a]["step_s_logged"]["mean"] * 1e3)
  md = [
      "# Scale-adaptive compute: flow matching's quality at half its cost?",
      "",
      f"Class-conditional MNIST-5k at 32x32, U-Net-mu, {step} steps of batch "
      f"64 (the equal-FLOPs arm {BUDGETS['adaptive3_eqflops']}), seeds "
      f"{list(scale.seeds)}, each method's shipped recipe; quality as in "
      f"mnist.md (classifier FD and class accuracy of {scale.num_samples} "
      f"samples, Euler {scale.num_steps} steps, CFG 1.5). Produced by "
      "`python -m experiments.half_cost` (`experiments/half_cost.py`); the "
      "16x16 digits study it grew from: [adaptive_digits.md]"
      "(adaptive_digits.md).", "",
      "## Cost and quality", "",
      common.table(
          ["arm", "train GFLOPs / step", "ms / step (log)", "steps",
           "training FLOPs / fm", "sample GFLOPs / sample", "/ fm",
           "classifier_fd", "class_accuracy"],
          [[label[a], common.fmt(summary[a]["step_gflops"], 4),
            "-" if ms(a) is None else f"{ms(a):.0f}",
            _eval_step(scale, a),
            cell_x(data["cost_ratio_to_fm"][a]["run_train_flops"]),
            common.fmt(summary[a]["sample_gflops"], 4),
            cell_x(data["cost_ratio_to_fm"][a]["sample_gflops"]),
            common.fmt(summary[a]["classifier_fd"]),
            common.fmt(summary[a]["class_accuracy"])] for a in ARMS]), "",
      *_allocation_lines(alloc),
      "Train GFLOPs: XLA's count of each run's compiled step (loss, "
      "gradient, optimizer); ms / step: the median the run logged, on a "
      "shared machine (only the side-by-side times below are ratios); "
      "training FLOPs / fm: of the whole run. Sample GFLOPs: network calls "
      "per band (samples.json) times XLA's count of one call at the band's "
      "grid, x 2 for guidance.", "",
      "## Half the cost?", "",
      *answer(data, label), "",
      "## Allocation rules against uniform allocation", "",
      *rules(data, label), "",
      "## Paired verdicts", "",
      common.table(["comparison"] + [m for m, _ in QUALITY],
                   [[f"{label[a]} - {label[b]}"] +
                    [stats.fmt(pairs[f"{a}-{b}"][m]) for m, _ in QUALITY]
                    for a, b in PAIRS]), ""]
  md += [stats.sentence(label[a], label[b], m, pairs[f"{a}-{b}"][m])
         for a, b in PAIRS for m, _ in QUALITY
         if pairs[f"{a}-{b}"][m].get("mean") is not None]
  if bench.get("train_s_fm"):
    md += ["", "## Wall time, measured side by side", "",
           "`python -m benchmarks.adaptive_cost --data=mnist --bands=3 "
           "--time` (the three arms' train steps and whole sampler runs "
           "in turns on this machine, medians):", "",
           _time_table(bench)]
    if split.get("train_s_fm"):
      md += ["", "The scale-adaptive arm with the measured-error split "
             f"(sub-batches {split['sub_batches']}), timed the same way "
             "(`--band_batch_sizes=" + ",".join(map(str, split[
                 "sub_batches"])) + "`):", "",
             _time_table(split)]
    wall = bench["train_time_ratio_fm"] * _budget(scale, "fm")
    eq = _budget(scale, "adaptive3_eqflops")
    md += ["", f"Equal wall time: in the time of flow matching's "
           f"{_budget(scale, 'fm')} steps the scale-adaptive arm runs "
           f"{wall:.0f} steps (the train-step ratio above), so the "
           f"{eq}-step arm (equal training FLOPs) is also the "
           f"equal-wall-time arm, to within {abs(eq - wall) / wall:.0%} of "
           "its steps, on this machine."]
  fig = figure(out_dir, data, label)
  if fig:
    md += ["", f"![quality against compute]({fig})"]
  md += ["", "Not measured here: an equal-wall-time arm, the DiT backbone, "
         "natural patches at 32x32, per-band network width, "
         "and any accelerator."]
  md += ["", *common.provenance(per_seed, label, scale.seeds,
                                "half_cost.json")]
  common.write_result(out_dir, "half_cost", "\n".join(md), data,
                      page="adaptive")
  return data


def _allocation_lines(alloc: dict) -> list:
  """What chose adaptive3_alloc's split (the pilot's measurement)."""
  if not alloc.get("flag"):
    return ["adaptive3_alloc: no pilot measured yet, so no split.", ""]
  fmt = lambda v: "(" + ", ".join(f"{x:.3g}" for x in v) + ")"
  return [
      f"Sub-batches from the measured errors: the pilot (seed "
      f"{PILOT[3]}, {PILOT[4]} steps) measured per-band RMS errors "
      f"{fmt(alloc['band_loss_rms'])} over steps "
      f"{alloc['measured_steps']}; with the bands' shares of t "
      f"{fmt(alloc['band_shares_of_t'])} and grid costs "
      f"{fmt(alloc['pixel_ratio'])} the rule gives "
      f"{tuple(alloc['band_batch_sizes'])} examples per batch against the "
      f"run's own {tuple(alloc['own_band_batch_sizes'])}: a step costs "
      f"{alloc['step_cost_vs_own']:.2f}x in pixels (the table's FLOPs are "
      "XLA's).", ""]


# A quality metric that is not resolved worse (_answer needs every one).
REACHED = (stats.NOT_RESOLVED, stats.BETTER, stats.EQUIVALENT)
# Pairs that say where a gap comes from: the 3-band path itself, or
# computing its coarse bands at their own grids.
REASON = (("kflow3", "fm"), ("adaptive3", "kflow3"),
          ("adaptive3_mean", "kflow3"))
# Each allocation rule against the same scale-adaptive arm with uniform
# allocation (the comparison), same seeds: at the same steps, and
# the measured split at 3500 steps against uniform sub-batches at 1900,
# the nearest budget trained (the split's cheaper step buys the extra
# steps; the line states the FLOPs ratio, which is not 1).
RULES = (("adaptive3_cost", "adaptive3"), ("adaptive3_energy", "adaptive3"),
         ("adaptive3_c2f", "adaptive3_mean"),
         ("adaptive3_alloc", "adaptive3_mean"),
         ("adaptive3_alloc_3500", "adaptive3_eqflops"))


def _quality(pairs: dict, a: str, b: str) -> dict:
  """{metric: the a-b paired dict or None} for every QUALITY metric."""
  return {m: pairs.get(f"{a}-{b}", {}).get(m) for m, _ in QUALITY}


def _differences(ps: dict) -> str:
  """'FD difference +1 [..] verdict; class accuracy difference ...'."""
  return "; ".join(f"{NAMES[m]} difference {stats.fmt(p)}"
                   for m, p in ps.items() if p and p.get("mean") is not None)


def rules(data: dict, label: dict) -> list:
  """One line per allocation rule: its compute relative to uniform
  allocation and both quality verdicts against it."""
  lines = []
  for a, b in RULES:
    ps = _quality(data["paired"], a, b)
    if not ps["classifier_fd"] or ps["classifier_fd"].get("mean") is None:
      continue
    train, sample = _ratios(data, a, b)
    lines.append(
        f"- {label[a]}: {cell_x(train)} the training FLOPs and "
        f"{cell_x(sample)} the sampling FLOPs of {label[b]}; "
        f"{_differences(ps)}.")
  return lines or ["No allocation rule is scored yet."]


def _ratios(data: dict, a: str, ref: str) -> tuple:
  """(training, sampling) FLOPs of arm `a`'s scored checkpoint relative to
  reference run `ref`'s (None where either is unmeasured)."""
  r, steps = data["cost_ratio_to_fm"], data["eval_steps"]
  def rel(key, scale_a, scale_ref):
    x, y = r[a][key], r[ref][key]
    return None if x is None or not y else x * scale_a / (y * scale_ref)
  return (rel("step_gflops", steps[a], steps[ref]),
          rel("sample_gflops", 1, 1))


def _answer(data: dict, label: dict, ref: str) -> tuple:
  """answer() against one reference run: (a line per scale-adaptive arm,
  the conclusion). Quality is every QUALITY metric: an arm reaches the
  reference when none of them is resolved worse (an FD not resolved while
  class accuracy is worse does not reach it)."""
  pairs, lines, reached, judged_any = data["paired"], [], [], False
  for a in ARMS:
    ps = _quality(pairs, a, ref)
    if (not a.startswith("adaptive") or not ps["classifier_fd"]
        or ps["classifier_fd"].get("mean") is None):
      continue
    train, sample = _ratios(data, a, ref)
    # A verdict on fewer than the study's seeds is not read (with 2 seeds
    # the t interval is 5x as wide as with 3: "not resolved" is vacuous).
    full = all(p and p.get("n", 0) >= len(data["seeds"])
               for p in ps.values())
    worse = [m for m, p in ps.items() if full and p["verdict"] == stats.WORSE]
    ok = full and all(p["verdict"] in REACHED for p in ps.values())
    judged = ok or bool(worse)
    judged_any = judged_any or judged
    if ok and train is not None and sample is not None:
      reached.append((max(train, sample), a))
    lines.append(
        f"- {label[a]}: {cell_x(train)} the training FLOPs and "
        f"{cell_x(sample)} the sampling FLOPs of {label[ref]}; {_differences(ps)}: " + (
            "reaches it." if ok else
            f"does not ({', '.join(NAMES[m] for m in worse)} worse)."
            if judged else "no verdict yet."))
  if not lines:
    return [], []
  if not judged_any:
    n = len(data["seeds"])
    return lines, [
        "No verdict: one seed gives no interval (run at least 3)."
        if n < 2 else
        f"No verdict yet: fewer than the study's {n} seeds are paired."]
  half = [a for c, a in sorted(reached) if c <= 0.5]
  end = []
  if half:
    end.append(f"**Yes**: {label[half[0]]} reaches the quality of "
               f"{label[ref]} at at most 0.5x its training and sampling "
               "FLOPs.")
    for m, lower in QUALITY:
      p = pairs[f"{half[0]}-{ref}"][m]
      if p["verdict"] == stats.NOT_RESOLVED:
        bound = p["high"] if lower else p["low"]
        end.append(
            f"It does so by the rule ({NAMES[m]} not resolved worse): its "
            f"{NAMES[m]} difference is {p['mean']:+.3g} in mean and the "
            f"interval reaches {bound:+.3g} on the worse side, so a deficit "
            "of that size is not excluded; this is not evidence of equal "
            "quality.")
    end += _saturation(pairs, label, ref)
  elif reached:
    c, a = min(reached)
    end.append(f"**No** arm reaches it at half the cost; the cheapest "
               f"that reaches it is {label[a]}, at {c:.2f}x (the larger "
               "of its training and sampling ratios).")
  else:
    end.append(f"**No** arm reaches the quality of {label[ref]}, at "
               "any cost measured here.")
  return lines, end


def _time_table(row: dict) -> str:
  """A benchmark row's side-by-side train-step and sampler times."""
  return common.table(
      ["what", "seconds fm / full / adaptive", "fm / adaptive",
       "full / adaptive"],
      [[what, " / ".join(f"{row[f'{k}_s_{a}']:.3g}"
                         for a in ("fm", "full", "adaptive")),
        f"{row[f'{k}_time_ratio_fm']:.2f}x",
        f"{row[f'{k}_time_ratio_full']:.2f}x"]
       for what, k in (("train step", "train"), ("sampler run", "sample"))])


def _saturation(pairs: dict, label: dict, ref: str) -> list:
  """What a "Yes" against `ref` means when `ref` is better than the same
  recipe trained for fewer steps (SHORTER): steps still pay there."""
  p = pairs.get(f"{ref}-{SHORTER.get(ref)}", {}).get("classifier_fd") or {}
  if p.get("verdict") != stats.BETTER:
    return []
  name = label[ref][:1].upper() + label[ref][1:]
  return [f"{name} is itself better than {label[SHORTER[ref]]} (FD "
          f"difference {stats.fmt(p)}): it is not trained to saturation, "
          "so at this budget the cheaper step buys steps that still pay. "
          "Against flow matching trained to saturation this is not "
          "measured."]


def answer(data: dict, label: dict) -> list:
  """The issue's question, read from the paired verdicts: which
  scale-adaptive arms reach each flow-matching reference's FD, at what
  training and sampling FLOP ratios to it; the cheapest that does, or why
  none does."""
  pairs, lines = data["paired"], []
  for ref in REFS:
    arms_, end = _answer(data, label, ref)
    if arms_:
      lines += [f"### Against {label[ref]}", ""] + arms_ + [""] + [
          "\n".join(end), ""]
  if not lines:
    return ["No scale-adaptive arm is scored yet."]
  why = []
  for a, b in REASON:
    p = pairs.get(f"{a}-{b}", {}).get("classifier_fd")
    if p and p.get("mean") is not None:
      why.append(stats.sentence(label[a], label[b], "classifier FD", p))
  if why:
    lines += ["", "Where the gap comes from (the same 3 bands at full "
              "resolution, paired):", ""] + [f"- {w}" for w in why]
    lines += _reading(pairs, len(data["seeds"]))
  return lines


def conclusions(data: dict) -> list:
  """[(reference label, its conclusion lines)]: answer()'s verdict on
  each flow-matching reference without the per-arm lines (the summary's
  reading of this page)."""
  label = {a: v[1] for a, v in ARMS.items()}
  out = []
  for ref in REFS:
    arms_, end = _answer(data, label, ref)
    if arms_:
      out.append((label[ref], end))
  return out


def _reading(pairs: dict, seeds: int) -> list:
  """The reading the two REASON verdicts allow, chosen by them (a
  difference not resolved is not read as none)."""
  def verdict(a, b, metric="classifier_fd"):
    """The pair's verdict, None without one (no data, one seed)."""
    p = pairs.get(f"{a}-{b}", {}).get(metric, {})
    v = p.get("verdict")
    return v if p.get("n", 0) >= seeds and v in (
        stats.BETTER, stats.WORSE, stats.NOT_RESOLVED,
        stats.EQUIVALENT) else None
  path, grids = verdict("kflow3", "fm"), verdict("adaptive3_mean", "kflow3")
  if path == stats.WORSE and grids in (stats.NOT_RESOLVED, stats.BETTER,
                                       stats.EQUIVALENT):
    return ["", "Reading: the 3-band K-Flow path is worse than flow "
            "matching at full resolution too, at the same FLOPs; the "
            "scale-adaptive arm (grids as block means) shows no detected "
            "loss against it. The gap lies in the band path at this "
            "budget, not in computing the coarse bands on their own "
            "grids."] + _steps_reading(verdict)
  if grids == stats.WORSE:
    return ["", "Reading: the scale-adaptive arm is worse than the same "
            "bands at full resolution: computing the coarse bands on their "
            "own grids costs quality here."]
  return []


def _steps_reading(verdict) -> list:
  """What the saving buys at this budget, when the equal-FLOPs arm says."""
  if verdict("adaptive3_eqflops", "fm") != stats.BETTER:
    return []
  return [
      "",
      "What the coarse grids buy is steps: at flow matching's training "
      "FLOPs the same scale-adaptive arm runs 1900 steps instead of 800 "
      "and is better than flow matching (paired table). At this budget "
      "every arm is short of steps (see the class accuracies), so the "
      "cheaper step turns into quality; with step-saturated runs the "
      "band path's own gap above would have to close for the same to "
      "hold."] + _longer_reading(verdict)


def _longer_reading(verdict) -> list:
  """What flow matching trained as long as the equal-FLOPs arm says."""
  longer, same = verdict("fm_1900", "fm"), verdict("adaptive3_eqflops",
                                                   "fm_1900")
  if longer is None:
    return ["Flow matching trained 1900 steps, the stronger reference, has "
            "no verdict against its 800-step runs yet (fewer than the "
            "study's seeds paired); until it has, the readings above hold against "
            "flow matching at 800 steps only."]
  word = {stats.BETTER: "better than", stats.WORSE: "worse than",
          stats.NOT_RESOLVED: "not resolved against",
          stats.EQUIVALENT: "equivalent to"}
  acc = verdict("adaptive3_eqflops", "fm_1900", "class_accuracy")
  return [f"Flow matching trained 1900 steps is {word[longer]} its "
          f"800-step runs (FD); the 1900-step scale-adaptive arm, at 0.42x "
          f"its training and sampling FLOPs, is "
          f"{word.get(same, 'without a verdict against')} it in FD and "
          f"{word.get(acc, 'without a verdict against')} it in class "
          "accuracy (\"Against flow matching, 1900 steps\" above)."]


def cell_x(v) -> str:
  return "-" if v is None else f"{v:.2f}x"


def figure(out_dir: str, data: dict, label: dict):
  """Classifier FD (mean ± std over seeds) against the whole run's
  training FLOPs and against sampling FLOPs per sample, both relative to
  flow matching's: one point per arm, flow matching at (1, 1)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  summary, ratios = data["summary"], data["cost_ratio_to_fm"]
  arms = [a for a in ARMS if summary[a]["classifier_fd"]["mean"] is not None]
  if not arms:
    return None
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  # One colour per arm (tab20 has more than ARMS), a marker per family:
  # flow matching squares, full-resolution K-Flow a triangle.
  colours = plt.get_cmap("tab20").colors
  marker = lambda a: ("s" if a.startswith("fm") else "^" if a == "kflow3"
                      else "o")
  fig, axes = plt.subplots(1, 2, figsize=(10, 6.2), dpi=110, sharey=True)
  for ax, key, xlabel in zip(
      axes, ("run_train_flops", "sample_gflops"),
      ("training FLOPs / flow matching's (800 steps)", "sampling FLOPs / "
       "flow matching's")):
    for a in arms:
      x = ratios[a][key]
      if x is None:
        continue
      fd = summary[a]["classifier_fd"]
      ax.errorbar([x], [fd["mean"]], yerr=[fd["std"] or 0.0],
                  marker=marker(a), capsize=3, label=label[a],
                  color=colours[list(ARMS).index(a) % len(colours)])
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks([0.2, 0.3, 0.5, 1, 2])
    ax.set_xlabel(xlabel)
  axes[0].set_ylabel("classifier FD (lower is better)")
  handles, names = axes[0].get_legend_handles_labels()
  fig.legend(handles, names, fontsize=7, loc="lower center", ncol=2,
             frameon=False)
  fig.suptitle("MNIST-5k 32x32: quality against compute, mean ± std over "
               "seeds (dashed: half)", fontsize=9)
  fig.tight_layout(rect=(0, 0.24, 1, 1))
  os.makedirs(out_dir, exist_ok=True)
  name = "adaptive.png"
  fig.savefig(os.path.join(out_dir, name))
  plt.close(fig)
  return name


if __name__ == "__main__":
  common.main(run, carries=True)
