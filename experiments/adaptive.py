"""Scale-adaptive compute: does K-Flow reach flow matching's quality at
less than half the cost when its coarse bands run at their own resolution?

Digits (16x16), U-Net-mu, K-Flow with the orthonormal Haar wavelet and
dyadic bands (1 level: 2 bands on 8x8 and 16x16; 2 levels: 3 bands on 4x4,
8x8, 16x16), uniform band times. Three arms on the same backbone and data:
plain flow matching, full-resolution K-Flow, and the same K-Flow with
`--config.model.scale_adaptive=True` (band s's network on bands 0..s as the
smaller image; docs/method.md, "Scale-adaptive compute").

* Cost: the training step time of each arm, measured by short runs of
  `python -m kflow_jax.main` interleaved arm by arm (so load on a shared
  machine hits all alike; the median of the logged step times after the
  first log).
* Same steps: every arm trained for the same number of steps.
* Same wall time: the adaptive arm trained for as many steps as fit in flow
  matching's time (steps x t_fm / t_adaptive, measured above).
* The best t sampling of docs/results/recipe.md (logit-normal) given to
  both flow matching and the 2-band adaptive arm, held against each other.

Every comparison is seed by seed (experiments/stats.py): an arm reaches
flow matching's quality only when the paired interval says better.

    python -m experiments.adaptive [--quick] [--root=DIR] [--out=DIR]
"""
import json
import os
import statistics

from experiments import common
from experiments import quality
from experiments import stats

HAAR = "configs/digits.py:transform=wavelet"
# name -> (config, overrides, bands). `fm` and `kflow_2` are quality's runs.
ARMS = {
    "fm": (quality.DIGITS["fm"][0], (), 1),
    "kflow_2": (HAAR, (), 2),
    "adaptive_2": (HAAR, ("--config.model.scale_adaptive=True",), 2),
    "kflow_3": (HAAR, ("--config.transform.levels=2",
                       "--config.path.num_scales=3"), 3),
    "adaptive_3": (HAAR, ("--config.transform.levels=2",
                          "--config.path.num_scales=3",
                          "--config.model.scale_adaptive=True"), 3),
}
# With logit-normal t, the best t sampling of both (docs/results/recipe.md):
# the same change given to flow matching and to the adaptive arm.
LOGIT = ("--config.loss.t_sampling=logit_normal",)
ARMS.update({
    "fm_logit": (quality.DIGITS["fm"][0], LOGIT, 1),
    "adaptive_2_logit": (HAAR, ARMS["adaptive_2"][1] + LOGIT, 2),
})
# The t sampling does not change what a step computes: these arms cost
# what the arm named here costs (not timed again).
SAME_COST = {"fm_logit": "fm", "adaptive_2_logit": "adaptive_2"}
# The flow-matching arm each adaptive arm is held against.
REFERENCE = {"adaptive_2_logit": "fm_logit"}
RUN_NAMES = {"fm": "digits_fm", "kflow_2": "digits_wavelet_haar",
             "fm_logit": "digits_fm_logit_normal"}
# Seeds of the 3-band arms: two (a spread at two thirds of the cost).
THREE_BAND_SEEDS = 2
# The full-resolution K-Flow arm each adaptive arm is the same objective
# as (same transform, bands and t sampling).
FULL_RESOLUTION = {"adaptive_2": "kflow_2", "adaptive_3": "kflow_3"}
# Timing runs: steps, log interval, rounds (arms interleaved per round).
TIMING = {"full": (120, 20, 2), "quick": (4, 2, 1)}


def _step_times(root, scale, arms) -> dict:
  """{arm: median seconds per training step}, measured once and kept."""
  f = os.path.join(root, "runs", "adaptive_timing.json")
  if os.path.exists(f):
    with open(f) as fh:
      return json.load(fh)
  if scale.report_only:
    raise common.Missing(f)
  steps, every, rounds = TIMING[scale.name]
  timed = {k: v for k, v in arms.items() if k not in SAME_COST}
  times = {name: [] for name in timed}
  for r in range(rounds):
    for name, (config, overrides, _) in timed.items():
      wd = os.path.join(root, "timing", f"{name}_round{r}")
      run = common.Run(name, config, scale.pinned + tuple(overrides) +
                       scale.extra_flags, 0,
                       wd)
      if not os.path.exists(os.path.join(wd, "metrics.jsonl")):
        common.command(["-m", "kflow_jax.main", *run.flags(),
                        f"--config.total_steps={steps}",
                        f"--config.log_every_steps={every}",
                        f"--config.checkpoint_every_steps={steps}",
                        "--config.sample_every_steps=0",
                        "--config.sample.at_end=False"],
                       os.path.join(wd, "train.log"))
      with open(os.path.join(wd, "metrics.jsonl")) as fh:
        logged = [json.loads(line) for line in fh]
      # The first interval holds the compilation.
      times[name] += [m["step_time_s"] for m in logged
                      if "step_time_s" in m][1:] or [
                          m["step_time_s"] for m in logged
                          if "step_time_s" in m]
  out = {name: statistics.median(v) for name, v in times.items()}
  os.makedirs(os.path.dirname(f), exist_ok=True)
  with open(f, "w") as fh:
    json.dump(out, fh, indent=1)
  return out


def _scores(root, scale, clf, name, steps, seeds, at=None):
  """Scores of arm `name` trained for `steps`, at checkpoint `at` (default:
  the last): {metric: mean_std} and "per_seed", the classifier FD seed by
  seed of scale.seeds (None for a seed the arm does not run or has no
  score for), so that arms with fewer seeds still pair with the rest."""
  config, overrides, _ = ARMS[name]
  run_name = RUN_NAMES.get(name, f"digits_{name}")
  if steps != max(scale.digits_budgets):
    run_name += f"_steps{steps}"
  budgets = scale.digits_budgets if steps == max(scale.digits_budgets) else (
      steps,)
  evs = []
  for seed in scale.seeds:
    run = seed in seeds and common.attempt(
        common.train, root, scale, run_name, config, overrides, seed,
        budgets)
    ev = run and common.attempt(common.evaluate, run, scale, at or steps,
                                "main", classifier=clf)
    evs.append(ev or {})
  out = {m: common.mean_std([e.get(m) for e in evs])
         for m in ("classifier_fd", "nfe")}
  out["per_seed"] = [e.get("classifier_fd") for e in evs]
  return out


def versus(a: dict, b: dict) -> dict:
  """Classifier FD of a minus b, seed by seed (lower is better). No two
  arms here share a config (their overrides differ in the backbone or
  the transform), so none is reported as the same config."""
  return stats.paired(a["per_seed"], b["per_seed"], lower_is_better=True)


def reaches(p: dict, cost: float) -> str:
  """Whether an arm at `cost` (its training time / flow matching's)
  reaches flow matching's quality at less than half its cost, as the
  paired verdict allows."""
  if cost >= 0.5:
    return "no (not below half the cost)"
  return {stats.BETTER: "yes (better beyond the interval)",
          stats.WORSE: "no (worse beyond the interval)",
          stats.NOT_RESOLVED: "not shown (not resolved: no difference "
                              "detected, which is not equality)",
          }.get(p["verdict"], f"no verdict ({p['verdict']})")


def independence(run, scale, step) -> dict:
  """band_independence.json of the tool a user runs: how far a trained
  full-resolution model's band-s output moves when its finer bands are
  fresh noise or zeros, against its band-s training error."""
  def make():
    common.command(["-m", "kflow_jax.tools.band_independence", *run.flags(),
                    f"--step={step}",
                    f"--num_examples={min(256, scale.num_samples)}"],
                   os.path.join(run.workdir, "band_independence.log"))
    with open(os.path.join(run.workdir, "band_independence.json")) as fh:
      return json.load(fh)
  return common._cached(run, f"band_independence_step{step}", make,  # pylint: disable=protected-access
                        scale.report_only)


def run(scale, root, out_dir) -> dict:
  clf = common.classifier(root, scale)
  steps = max(scale.digits_budgets)
  arms = ARMS if scale.all_arms else {k: ARMS[k] for k in
                                      ("fm", "kflow_2", "adaptive_2")}
  try:
    t = dict(_step_times(root, scale, arms))
  except common.Missing:
    t = {}
  t.update({k: t[v] for k, v in SAME_COST.items() if k in arms and v in t})
  same, wall, wall_steps = {}, {}, {}
  seeds = {name: scale.seeds[:THREE_BAND_SEEDS] if bands == 3 else
           scale.seeds for name, (_, _, bands) in arms.items()}
  for name in arms:
    same[name] = _scores(root, scale, clf, name, steps, seeds[name])
  for name in arms:
    # Full-resolution K-Flow costs what flow matching costs (the step
    # ratio is in the table): only the adaptive arms get more steps.
    ref = REFERENCE.get(name, "fm")
    if not name.startswith("adaptive") or name not in t or ref not in t:
      continue
    # The same wall time as flow matching's run, in whole log intervals.
    n = max(1, int(round(steps * t[ref] / t[name] / 50.0)) * 50
            ) if scale.all_arms else steps
    wall_steps[name] = n
    wall[name] = same[name] if n == steps else _scores(
        root, scale, clf, name, n, seeds[name])
  # Below half of flow matching's cost: the adaptive runs' mid-way
  # checkpoint (min(budgets) steps, learning rate not yet decayed).
  early, early_steps = {}, min(scale.digits_budgets)
  if early_steps < steps:
    for name in arms:
      if name.startswith("adaptive_2"):
        early[name] = _scores(root, scale, clf, name, steps, seeds[name],
                              at=early_steps)
  # The premise, on the trained full-resolution runs (seed 0).
  indep = {}
  for name in arms:
    if name.startswith("kflow"):
      config, overrides, _ = ARMS[name]
      r = common.attempt(common.train, root, scale,
                         RUN_NAMES.get(name, f"digits_{name}"), config,
                         overrides, scale.seeds[0], scale.digits_budgets)
      indep[name] = r and common.attempt(independence, r, scale, steps)
  # Seed by seed against flow matching: at equal steps, at flow
  # matching's wall time, at the early checkpoint; and each adaptive arm
  # against full-resolution K-Flow on the same objective at equal steps.
  paired = {"same_steps": {}, "same_wall_time": {}, "early": {},
            "adaptive_vs_full": {}}
  for name in arms:
    ref = REFERENCE.get(name, "fm")
    if name == ref or ref not in same:
      continue
    paired["same_steps"][name] = versus(same[name], same[ref])
    if name in wall:
      paired["same_wall_time"][name] = versus(wall[name], same[ref])
    if name in early:
      paired["early"][name] = versus(early[name], same[ref])
    full = FULL_RESOLUTION.get(name)
    if full in same:
      paired["adaptive_vs_full"][name] = versus(same[name], same[full])
  rows = []
  for name, (_, _, bands) in arms.items():
    ref = REFERENCE.get(name, "fm")
    cost = (t.get(ref, 0) / t[name]) if t.get(name) else None
    p = (paired["same_wall_time"].get(name)
         or paired["same_steps"].get(name))
    rows.append([
        name, bands,
        "-" if name not in t else f"{t[name] * 1e3:.0f}",
        "-" if cost is None else f"{cost:.2f}",
        common.fmt(same[name]["classifier_fd"]),
        wall_steps.get(name, "-" if name.startswith("adaptive") else steps),
        common.fmt((wall.get(name) or same[name])["classifier_fd"]),
        "-" if p is None else f"{stats.fmt(p)} ({ref})"])
  verdicts = []
  for name in arms:
    if not name.startswith("adaptive") or name not in wall:
      continue
    ref = REFERENCE.get(name, "fm")
    cost = t[ref] / t[name]
    if name in early:
      e_cost = early_steps / steps / cost
      p = paired["early"][name]
      verdicts.append(
          f"- {name} at its {early_steps}-step checkpoint ({e_cost:.2f} of "
          f"{ref}'s training time): FD - {ref}'s = {stats.fmt(p)}; flow "
          f"matching's quality at less than half its cost: "
          f"**{reaches(p, e_cost)}**.")
    p = paired["same_wall_time"][name]
    verdicts.append(
        f"- {name}: a training step costs 1/{cost:.2f} of {ref}'s; in "
        f"{ref}'s wall time ({wall_steps[name]} steps): "
        + stats.sentence(name, ref, "classifier FD", p)
        + f" Flow matching's quality at less than half its cost: "
        f"**{reaches(p, 1 / cost)}**.")
  verdicts += [f"- At equal steps: "
               + stats.sentence(name, FULL_RESOLUTION[name], "classifier FD",
                                p) for name, p in
               paired["adaptive_vs_full"].items()]
  md = [
      "# Claim 6 on 16x16 digits: scale-adaptive compute",
      "",
      "The page of scale-adaptive compute at 32x32, where the saving "
      "should pay, is [adaptive.md](adaptive.md).",
      "",
      f"digits, U-Net-mu, Haar wavelet with dyadic bands, {steps} training "
      f"steps, {len(scale.seeds)} seed(s) ({THREE_BAND_SEEDS} for 3 bands), "
      "classifier FD of "
      f"{scale.num_samples} samples (Euler {scale.num_steps} steps; lower "
      "is better). Step time: median of short training runs of "
      "`python -m kflow_jax.main`, arms interleaved. Produced by "
      "`python -m experiments.adaptive` (`experiments/adaptive.py`).",
      "",
      common.table(["arm", "bands", "ms / train step",
                    "cost: flow matching / arm", f"FD, {steps} steps",
                    "steps in flow matching's time",
                    "FD, flow matching's time",
                    "FD - flow matching, seed by seed (95 % interval)"],
                   rows),
      "",
      *verdicts,
      "",
      "## Do trained full-resolution models read the finer bands?",
      "",
      "`python -m kflow_jax.tools.band_independence` on seed 0's last "
      "checkpoint: for t in band s, the mean squared change of the band-s "
      "output when bands s+1.. are a fresh noise draw or zeros, as a "
      "fraction of the model's band-s training error (per pixel, held-out "
      "images). Below 1: the finer bands move band s by less than the "
      "error the model still makes there.",
      "",
      common.table(
          ["run", "band", "band-s error", "change / error, fresh noise",
           "change / error, zeros"],
          [[name, b["band"], f"{b['error_band']:.3g}",
            f"{b['ratio_noise']:.3f}", f"{b['ratio_zero']:.3f}"]
           for name, rec in indep.items() if rec
           for b in rec["bands"]]),
  ]
  data = {"scale": scale._asdict(), "step_time_s": t, "same_steps": same,
          "early": early, "early_steps": early_steps,
          "band_independence": indep,
          "same_wall_time": wall, "wall_steps": wall_steps,
          "paired": paired}
  # The page of scale-adaptive compute (adaptive.md) is half_cost.py's, on
  # MNIST-5k 32x32 where the saving should pay; this is the 16x16 digits
  # study it grew from.
  common.write_result(out_dir, "adaptive", "\n".join(md), data,
                      page="adaptive_digits")
  return data


if __name__ == "__main__":
  common.main(run)
