"""Claim 1: K-Flow matches or beats plain flow matching in quality at equal
compute.

The arms share data, backbone (U-Net-mu), batch, steps, optimizer and
sampler; they differ in the transform and its bands. On `digits` the score
is the Frechet distance in the features of a separately trained digits
classifier (lower is better; real against real: about 17); on
`natural_patches` (no classifier) the radially averaged spectrum error
(overall and in the finest third of frequencies), the sliced Wasserstein
distance and the random-feature FD. Every arm runs for every seed; each
budget is a checkpoint of the same run, and each K-Flow arm is held
against flow matching seed by seed (experiments/stats.py: mean paired
difference, 95 % t interval, verdict); the solvers are compared at equal
NFE on seed 0's last checkpoint (one seed: no verdict).

    python -m experiments.quality [--quick] [--root=DIR] [--out=DIR]
"""
import json
import os

import numpy as np

from experiments import common
from experiments import stats

# name -> (config, overrides). The configs as shipped, so the comparison is
# what a user gets; `fm` is plain flow matching through the same code.
DIGITS = {
    "fm": ("configs/digits.py:transform=identity", ()),
    "fourier": ("configs/digits.py:transform=fourier", ()),
    "dct": ("configs/digits.py:transform=dct", ()),
    "wavelet_haar": ("configs/digits.py:transform=wavelet", ()),
    "wavelet_db4": ("configs/digits.py:transform=wavelet",
                    ("--config.transform.wavelet=db4",)),
    "pca": ("configs/digits.py:transform=pca", ()),
}
# The patches evidence was gathered with energy-aware band times (gamma
# 0.5), the default then; pinned, as common.Scale.pinned pins t sampling.
PATCHES_GAMMA = ("--config.path.gamma=0.5",)
PATCHES = {
    "fm": ("configs/patches.py:transform=identity", ()),
    "fourier": ("configs/patches.py:transform=fourier", PATCHES_GAMMA),
    "wavelet": ("configs/patches.py:transform=wavelet", PATCHES_GAMMA),
}
# Solvers at equal NFE (network calls per sample): steps = NFE / stages.
SOLVERS = (("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4))
SOLVER_ARMS = ("fm", "fourier", "wavelet_haar")
PAIRED_NOTE = ("Each K-Flow arm minus flow matching, seed by seed (same seeds: "
               "same data order and noise): mean difference, 95 % t "
               "interval over seeds, verdict (`experiments/stats.py`; "
               "lower is better, so a negative difference favours K-Flow; "
               "\"not resolved\": the interval holds 0, which is not "
               "evidence that they are equal).")
DIGITS_METRICS = ("classifier_fd", "random_fd", "sliced_w2")
PATCHES_METRICS = ("spectrum_error", "spectrum_error_fine", "sliced_w2",
                   "random_fd")


def _comparison(root, scale, data, arms_, budgets, metrics, clf):
  """The scores seed by seed {arm: {budget: [{metric: value} per seed of
  scale.seeds]}} ({} where a seed has no score)."""
  per_seed = {}
  for name, (config, overrides) in common.arms(scale, arms_.items()):
    per_seed[name] = {str(b): [] for b in budgets}
    for seed in scale.seeds:
      run = common.attempt(common.train, root, scale, f"{data}_{name}",
                           config, overrides, seed, budgets)
      for b in budgets:
        ev = run and common.attempt(common.evaluate, run, scale, b, "main",
                                    classifier=clf)
        per_seed[name][str(b)].append(
            {m: ev.get(m) for m in metrics} if ev else {})
  return per_seed


def _hashes(root, scale, data, arms_, budgets) -> dict:
  """{arm: [training hash per seed]}: what common.train trains for it."""
  return {name: [common.training_hash(common.resolved_config(
      common.arm_run(root, scale, f"{data}_{name}", config, overrides,
                     seed)), max(budgets)) for seed in scale.seeds]
          for name, (config, overrides) in common.arms(scale, arms_.items())}


def carry(previous: dict, data: str, per_seed: dict, hashes: dict,
          metrics, budgets) -> dict:
  """per_seed with each seed that has no score now taking its record from
  the previous result file (common.carry_records, budget by budget: each
  budget is a checkpoint of one run, so they share the run's hash).
  Result files written before "per_seed" kept the same records under
  "<data>_raw"."""
  before = (previous.get("per_seed", {}).get(data)
            or previous.get(f"{data}_raw", {}))
  out = {name: {} for name in per_seed}
  for b in budgets:
    kept = common.carry_records(
        {n: (before.get(n) or {}).get(str(b), []) for n in per_seed},
        {n: per_seed[n][str(b)] for n in per_seed}, hashes, metrics)
    for name in per_seed:
      out[name][str(b)] = kept[name]
  return out


def _means(per_seed, metrics, budgets) -> dict:
  """{arm: {budget: {metric: mean_std over seeds}}}."""
  return {name: {str(b): {m: common.mean_std(
      [r.get(m) for r in per[str(b)]]) for m in metrics} for b in budgets}
          for name, per in per_seed.items()}


def paired(per_seed, hashes, metrics, budgets, ref="fm") -> dict:
  """{arm: {budget: {metric: stats.paired(arm, ref)}}}: every arm against
  flow matching seed by seed (all metrics here: lower is better); an arm
  with flow matching's training hashes is the same run, not an effect."""
  out = {}
  if ref not in per_seed:
    return out
  for name in per_seed:
    if name == ref:
      continue
    same = hashes[name] == hashes[ref]
    out[name] = {str(b): {m: stats.paired(
        [r.get(m) for r in per_seed[name][str(b)]],
        [r.get(m) for r in per_seed[ref][str(b)]],
        lower_is_better=True, same_config=same) for m in metrics}
                 for b in budgets}
  return out


def _solvers(root, scale, data, arms_, budgets, clf, metric):
  """{arm: {solver: {allocation: metric}}} at NFE = scale.num_steps, for
  flow matching and the shipped transforms (fourier; on digits also haar):
  a solver is a property of the path, and every arm costs an evaluation
  per solver."""
  out = {}
  b = max(budgets)
  arms_ = {k: v for k, v in arms_.items() if k in SOLVER_ARMS}
  for name, (config, overrides) in common.arms(scale, arms_.items()):
    run = common.attempt(common.train, root, scale, f"{data}_{name}",
                         config, overrides, scale.seeds[0], budgets)
    out[name] = {}
    if run is None:
      continue
    for solver, stages in SOLVERS if scale.all_arms else SOLVERS[:1]:
      steps = max(1, scale.num_steps // stages)
      # Equal steps per band against steps by time share: once, with Euler,
      # and only where they differ (bands of equal length give one grid:
      # an arm that cannot differ is not run).
      allocs = (("time", "band") if name != "fm" and stages == 1
                and not equal_bands(run) else ("time",))
      for alloc in allocs:
        # Euler at the main NFE with the default allocation is the main
        # evaluation itself: reused, not sampled again.
        tag = ("main" if (solver, steps, alloc) == ("euler", scale.num_steps,
                                                    "time")
               else f"{solver}{steps}_{alloc}")
        ev = common.attempt(
            common.evaluate, run, scale, b, tag,
            classifier=clf, sample=({} if tag == "main" else dict(
                solver=solver, num_steps=steps, step_allocation=alloc)))
        if ev is None:
          continue
        out[name].setdefault(solver, {})[alloc] = {
            "value": ev.get(metric), "nfe": ev.get("nfe")}
  return out


def equal_bands(run) -> bool:
  """True when the run's bands all span the same length of t without
  overlap (its path.json): then allocating steps by band or by time share
  gives the same time grid (flow/sampling.time_grid)."""
  with open(os.path.join(run.workdir, "path.json")) as fh:
    p = json.load(fh)
  lengths = np.diff(np.asarray(p["tau"], np.float64))
  return not p.get("overlap") and bool(np.allclose(lengths, lengths[0],
                                                   rtol=0, atol=1e-9))


def carry_solvers(previous: dict, data: str, solvers: dict,
                  per_seed: dict, budgets) -> dict:
  """solvers with each entry measured now, and each (solver, allocation)
  not measured now taken from the previous result file, when the arm's
  first seed at the last budget is the same run as the one behind it (its
  record carried, or measured again against a record of its training
  hash: `reproduced`). A --report over a machine that retrained only some
  runs scores only their main evaluation (Euler, time share): the other
  solvers' rows are kept, marked carried. A `band` entry equal to its
  `time` entry to the last bit is dropped: the two allocations gave one
  grid (equal_bands), so the row could not differ."""
  before = previous.get("solvers", {}).get(data, {})
  out = {}
  for name, per in solvers.items():
    first = (per_seed.get(name, {}).get(str(max(budgets))) or [{}])[0] or {}
    same = bool(first.get("carried") or "reproduced" in first)
    old = before.get(name, {}) if same else {}
    out[name] = {}
    for solver, _ in SOLVERS:
      allocs = dict(old.get(solver) or {})
      if allocs.get("band") == allocs.get("time"):
        allocs.pop("band", None)
      row = {a: dict(r, carried=True) for a, r in allocs.items()}
      row.update(per.get(solver) or {})
      if row:
        out[name][solver] = row
  return out


def _table(result, metrics, budgets):
  rows = []
  for name, per in result.items():
    for b in budgets:
      rows.append([name, b] + [common.fmt(per[str(b)][m]) for m in metrics])
  return common.table(["arm", "steps"] + list(metrics), rows)


def _solver_table(result, metric):
  rows = []
  for name, per in result.items():
    for solver, allocs in per.items():
      for alloc, r in allocs.items():
        v = r["value"]
        rows.append([name, solver, alloc, r["nfe"],
                     "-" if v is None else f"{v:.4g}"
                     + (" (carried)" if r.get("carried") else "")])
  return common.table(["arm", "solver", "steps per band", "NFE", metric],
                      rows)


def _paired_table(pairs, metrics, budgets):
  rows = [[name, b] + [stats.fmt(per[str(b)][m]) for m in metrics]
          for name, per in pairs.items() for b in budgets]
  return common.table(["arm - fm", "steps"] + list(metrics), rows)


def verdict(pairs, metric, budget) -> list:
  """One line per K-Flow arm: arm - flow matching seed by seed, the 95 %
  interval and what it allows (experiments/stats.py)."""
  return ["- " + stats.sentence(name, "flow matching",
                                f"{metric}, {budget} steps",
                                per[str(budget)][metric])
          for name, per in pairs.items()]


def run(scale, root, out_dir) -> dict:
  clf = common.classifier(root, scale)
  previous = common.previous_result(out_dir, "quality", scale)
  sets = (("digits", DIGITS, scale.digits_budgets, DIGITS_METRICS, clf),
          ("patches", PATCHES, scale.patches_budgets, PATCHES_METRICS, ""))
  seeds_of, hashes, means, pairs = {}, {}, {}, {}
  for data, arms_, budgets, metrics, judge in sets:
    per_seed = _comparison(root, scale, data, arms_, budgets, metrics, judge)
    # Runs do not outlive their machine; seeds without a score here keep
    # the previous result file's record (same training hash), marked.
    hashes[data] = _hashes(root, scale, data, arms_, budgets)
    seeds_of[data] = carry(previous, data, per_seed, hashes[data], metrics,
                           budgets)
    means[data] = _means(seeds_of[data], metrics, budgets)
    pairs[data] = paired(seeds_of[data], hashes[data], metrics, budgets)
  solvers = {"digits": _solvers(root, scale, "digits", DIGITS,
                                scale.digits_budgets, clf, "classifier_fd"),
             "patches": {}}
  if scale.all_arms:  # the toy size checks the digits table only
    solvers["patches"] = _solvers(root, scale, "patches", PATCHES,
                                  scale.patches_budgets, "",
                                  "spectrum_error_fine")
  for data, _, budgets, _, _ in sets:
    solvers[data] = carry_solvers(previous, data, solvers[data],
                                  seeds_of[data], budgets)
  digits, patches = means["digits"], means["patches"]
  figs = {}
  for data, res, budgets, metric in (
      ("digits", digits, scale.digits_budgets, "classifier_fd"),
      ("patches", patches, scale.patches_budgets, "spectrum_error_fine")):
    series = {name: (budgets,
                     [per[str(b)][metric]["mean"] for b in budgets],
                     [per[str(b)][metric]["std"] for b in budgets])
              for name, per in res.items()}
    figs[data] = common.plot(out_dir, f"quality_{data}.png", series,
                             "training steps", metric,
                             f"{data}: {metric} (mean ± std over "
                             f"{len(scale.seeds)} seeds)")
  seeds = len(scale.seeds)
  md = [
      "# Claim 1: quality at equal compute",
      "",
      f"Scale `{scale.name}`: {seeds} seed(s), {scale.num_samples} samples "
      f"per evaluation, Euler with {scale.num_steps} steps unless stated; "
      "each budget is a checkpoint of one run (the shorter one mid-way "
      "through the cosine schedule of the longer). Produced by "
      "`python -m experiments.quality` (`experiments/quality.py`).",
      "",
      "Every arm with the recipe the configs shipped before the recipe "
      "study (uniform t, no band I/O; pinned by experiments/common.py). "
      "With each method's best recipe the digits comparison is in "
      "recipe.md, \"The combined recipe\".",
      "",
      "## digits (16x16, unconditional)",
      "",
      "Classifier FD: Frechet distance in the features of the digits "
      "classifier of `kflow_jax.tools.train_classifier` (lower is better).",
      "",
      _table(digits, DIGITS_METRICS, scale.digits_budgets),
      "",
      f"![digits]({figs['digits']})",
      "",
      PAIRED_NOTE,
      "",
      _paired_table(pairs["digits"], DIGITS_METRICS, scale.digits_budgets),
      "",
      *verdict(pairs["digits"], "classifier_fd", max(scale.digits_budgets)),
      "",
      "## natural_patches (16x16x3)",
      "",
      "Spectrum error: mean |log ratio| of the radially averaged power "
      "spectra of samples and held-out patches (overall; `_fine`: finest "
      "third of frequencies).",
      "",
      _table(patches, PATCHES_METRICS, scale.patches_budgets),
      "",
      f"![patches]({figs['patches']})",
      "",
      PAIRED_NOTE,
      "",
      _paired_table(pairs["patches"], PATCHES_METRICS,
                    scale.patches_budgets),
      "",
      *verdict(pairs["patches"], "spectrum_error_fine",
               max(scale.patches_budgets)),
      *verdict(pairs["patches"], "sliced_w2", max(scale.patches_budgets)),
      "",
      f"## Solvers at equal NFE ({scale.num_steps}), seed "
      f"{scale.seeds[0]}, last checkpoint",
      "",
      "`steps per band`: `time` splits the steps by each band's share of t "
      "(the default), `band` gives every band the same number "
      "(`--config.sample.step_allocation=band`); on a path whose bands "
      "span equal lengths of t the two are one grid, so `band` is not run "
      "there.",
      "",
      "digits (classifier FD):",
      "",
      _solver_table(solvers["digits"], "classifier_fd"),
      "",
      "natural_patches (spectrum error, finest third):",
      "",
      _solver_table(solvers["patches"], "spectrum_error_fine"),
  ]
  # Which seeds were scored now and which carried (at each data set's
  # last budget; the earlier budget is a checkpoint of the same run).
  last = {f"{d} {n}": per[str(max(b))] for d, _, b, _, _ in sets
          for n, per in seeds_of[d].items()}
  md += ["", *common.provenance(last, {k: k for k in last}, scale.seeds,
                                "quality.json")]
  data = {"scale": scale._asdict(), "digits": digits, "patches": patches,
          "solvers": solvers, "per_seed": seeds_of, "hashes": hashes,
          "paired": pairs}
  common.write_result(out_dir, "quality", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run, carries=True)
