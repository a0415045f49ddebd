"""Claim 1: K-Flow matches or beats plain flow matching in quality at equal
compute.

The arms share data, backbone (U-Net-mu), batch, steps, optimizer and
sampler; they differ in the transform and its bands. On `digits` the score
is the Frechet distance in the features of a separately trained digits
classifier (lower is better; real against real: about 17); on
`natural_patches` (no classifier) the radially averaged spectrum error
(overall and in the finest third of frequencies), the sliced Wasserstein
distance and the random-feature FD. Every arm runs for every seed; each
budget is a checkpoint of the same run; the solvers are compared at equal
NFE on seed 0's last checkpoint.

    python -m experiments.quality [--quick] [--root=DIR] [--out=DIR]
"""
from experiments import common

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
DIGITS_METRICS = ("classifier_fd", "random_fd", "sliced_w2")
PATCHES_METRICS = ("spectrum_error", "spectrum_error_fine", "sliced_w2",
                   "random_fd")


def _comparison(root, scale, data, arms_, budgets, metrics, clf):
  """{arm: {budget: {metric: mean_std}}} and the per-seed values."""
  out, raw = {}, {}
  for name, (config, overrides) in common.arms(scale, arms_.items()):
    out[name], raw[name] = {}, {}
    for seed in scale.seeds:
      run = common.attempt(common.train, root, scale, f"{data}_{name}",
                           config, overrides, seed, budgets)
      for b in budgets:
        ev = run and common.attempt(common.evaluate, run, scale, b, "main",
                                    classifier=clf)
        if ev:
          raw[name].setdefault(str(b), []).append(ev)
    for b in budgets:
      evs = raw[name].get(str(b), [])
      out[name][str(b)] = {m: common.mean_std([e.get(m) for e in evs])
                           for m in metrics}
  return out, raw


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
      # Equal steps per band against steps by time share: once, with Euler.
      allocs = ("time", "band") if name != "fm" and stages == 1 else (
          "time",)
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
                     "-" if v is None else f"{v:.4g}"])
  return common.table(["arm", "solver", "steps per band", "NFE", metric],
                      rows)


def verdict(result, metric, budget) -> list:
  """One line per K-Flow arm: better or worse than fm beyond the spread."""
  fm = result["fm"][str(budget)][metric]
  lines = []
  for name, per in result.items():
    if name == "fm":
      continue
    s = per[str(budget)][metric]
    if s["mean"] is None or fm["mean"] is None:
      continue
    word = {"lower": "better than", "higher": "worse than",
            "within": "within the spread of",
            "undecided": "(one seed, no spread to judge by) compared with"
            }[common.compare(s, fm)]
    lines.append(f"- {name}: {common.fmt(s)} vs fm {common.fmt(fm)} "
                 f"({metric}, {budget} steps): {word} flow matching.")
  return lines


def run(scale, root, out_dir) -> dict:
  clf = common.classifier(root, scale)
  digits, digits_raw = _comparison(root, scale, "digits", DIGITS,
                                   scale.digits_budgets, DIGITS_METRICS, clf)
  patches, patches_raw = _comparison(root, scale, "patches", PATCHES,
                                     scale.patches_budgets, PATCHES_METRICS,
                                     "")
  solvers = {"digits": _solvers(root, scale, "digits", DIGITS,
                                scale.digits_budgets, clf, "classifier_fd"),
             "patches": {}}
  if scale.all_arms:  # the toy size checks the digits table only
    solvers["patches"] = _solvers(root, scale, "patches", PATCHES,
                                  scale.patches_budgets, "",
                                  "spectrum_error_fine")
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
      *verdict(digits, "classifier_fd", max(scale.digits_budgets)),
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
      *verdict(patches, "spectrum_error_fine", max(scale.patches_budgets)),
      *verdict(patches, "sliced_w2", max(scale.patches_budgets)),
      "",
      f"## Solvers at equal NFE ({scale.num_steps}), seed "
      f"{scale.seeds[0]}, last checkpoint",
      "",
      "`steps per band`: `time` splits the steps by each band's share of t "
      "(the default), `band` gives every band the same number "
      "(`--config.sample.step_allocation=band`).",
      "",
      "digits (classifier FD):",
      "",
      _solver_table(solvers["digits"], "classifier_fd"),
      "",
      "natural_patches (spectrum error, finest third):",
      "",
      _solver_table(solvers["patches"], "spectrum_error_fine"),
  ]
  data = {"scale": scale._asdict(), "digits": digits, "patches": patches,
          "solvers": solvers, "digits_raw": digits_raw,
          "patches_raw": patches_raw}
  common.write_result(out_dir, "quality", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
