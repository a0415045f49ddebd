"""Claim 3: class information lives in the coarse scales.

Class-conditional digits (CFG 1.5), K-Flow (Fourier, two bands) and plain
flow matching, same backbone and budget, each with its best recipe of
docs/results/recipe.md (K-Flow: band I/O and logit-normal t per band; flow
matching: logit-normal t), and with the recipe both were first run with
(uniform t, no band I/O: a K-Flow that barely followed its label). The label is kept for the first
30 % of t and dropped after (for K-Flow: 60 % of the coarse band, nothing
of the fine one; for flow matching: 30 % of everything), by the tool a
user runs, `python -m kflow_jax.tools.class_drop_ratio`. The class-drop
ratio (CDR) is metric(dropped) / metric(full): for the classifier FD
(lower is better) 1 means dropping the label cost nothing, so a smaller
CDR means the class was settled earlier; the class accuracy of the
dropped samples says the same directly (paper: CDR 1.49 K-Flow vs 3.25
flow matching, ImageNet FID). Each K-Flow arm is held against flow
matching seed by seed (experiments/stats.py); the retained accuracy
(dropped / kept) is the robust reading.

    python -m experiments.class_drop [--quick] [--root=DIR] [--out=DIR]
"""
import json
import os

from experiments import common
from experiments import recipe
from experiments import stats

FM_COND = "configs/digits.py:transform=identity,cond"
KFLOW_COND = "configs/digits.py:transform=fourier,cond"
# name -> (column, config, overrides); the first two are judged.
ARMS = {
    "fm_logit_normal": ("flow matching", FM_COND,
                        recipe.LOGIT),
    "kflow_fourier_bandio": ("K-Flow (fourier)", KFLOW_COND,
                             recipe.COMBINED),
    "fm": ("flow matching, uniform t", FM_COND, ()),
    "kflow_fourier": ("K-Flow, uniform t, no band I/O", KFLOW_COND, ()),
}
FRACTION = 0.3


def cdr(run, scale, clf, metric):
  def make():
    common.command(
        ["-m", "kflow_jax.tools.class_drop_ratio", *run.flags(),
         f"--fraction={FRACTION}", f"--metric={metric}",
         f"--config.evals.classifier={clf}",
         f"--config.sample.num_samples={scale.num_samples}",
         f"--config.sample.batch_size={min(scale.num_samples, 250)}",
         f"--config.sample.num_steps={scale.num_steps}"],
        os.path.join(run.workdir, "cdr.log"))
    with open(os.path.join(run.workdir, "cdr.json")) as fh:
      return json.load(fh)
  return common._cached(run, f"cdr_{metric}", make, scale.report_only)  # pylint: disable=protected-access


# (K-Flow arm, flow-matching arm) compared seed by seed; the first pair
# (each method's best recipe) is the one judged.
PAIRS = (("kflow_fourier_bandio", "fm_logit_normal"), ("kflow_fourier", "fm"))
# (key, label, lower is better). accuracy_retained = accuracy with the
# label dropped / with it kept: the fraction of its class accuracy a
# method keeps (the robust reading: an FD ratio also moves because
# dropping the label drops guidance, which restores diversity).
KEYS = (("accuracy_full", "class accuracy, label kept", False),
        ("accuracy_drop", f"class accuracy, label dropped at t={FRACTION}",
         False),
        ("accuracy_retained", "accuracy retained (dropped / kept)", False),
        ("fd_full", "classifier FD, label kept", True),
        ("fd_drop", "classifier FD, label dropped", True),
        ("cdr_fd", "CDR (FD dropped / FD kept)", True))
JUDGED = ("accuracy_retained", "cdr_fd")
LABELS = {k: label for k, label, _ in KEYS}
SEEDS = 2  # the first two seeds: a paired interval at half the cost


def reading(p_retained: dict, p_cdr: dict) -> str:
  """The claim's reading, chosen by the paired verdicts of the retained
  accuracy (the robust reading) and of the classifier-FD CDR."""
  v = p_retained["verdict"]
  if v in (stats.ONE_SEED, stats.SAME_CONFIG, stats.IDENTICAL):
    return f"Retained accuracy: {v}, no verdict."
  head = {
      stats.BETTER: "The claim holds here by the robust reading: K-Flow "
                    "keeps more of its class accuracy than flow matching "
                    "when the label is dropped, beyond the 95 % interval.",
      stats.WORSE: "The claim does not hold here: K-Flow keeps less of its "
                   "class accuracy than flow matching, beyond the 95 % "
                   "interval.",
      stats.NOT_RESOLVED: "Not resolved by the retained accuracy: the "
                          "interval holds 0 (no difference detected, which "
                          "is not evidence of equality).",
      stats.EQUIVALENT: "Retained accuracy equivalent within the stated "
                        "margin.",
  }[v]
  tail = {stats.BETTER: "lower than flow matching's beyond the interval",
          stats.WORSE: "higher than flow matching's beyond the interval",
          }.get(p_cdr["verdict"], p_cdr["verdict"])
  return f"{head} The classifier-FD CDR of K-Flow: {tail}."


def _previous_records(previous: dict, name: str) -> list:
  """Arm `name`'s seed records in the previous result file; files written
  before the retained accuracy had its name call it `accuracy_ratio`."""
  return [r and {("accuracy_retained" if k == "accuracy_ratio" else k): v
                 for k, v in r.items()}
          for r in (previous.get(name) or {}).get("per_seed", [])]


def run(scale, root, out_dir) -> dict:
  clf = common.classifier(root, scale)
  previous = common.previous_result(out_dir, "class_drop", scale)
  b = scale.digits_budgets
  out, per_seed, hashes = {}, {}, {}
  arms = ARMS if scale.all_arms else dict(list(ARMS.items())[:2])
  seeds = scale.seeds[:SEEDS]
  for name, (_, config, overrides) in arms.items():
    recs = []
    hashes[name] = [common.training_hash(common.resolved_config(
        common.arm_run(root, scale, f"digits_cond_{name}", config,
                       overrides, seed)), max(b)) for seed in seeds]
    for seed in seeds:
      r = common.attempt(common.train, root, scale, f"digits_cond_{name}",
                         config, overrides, seed, b)
      acc = r and common.attempt(cdr, r, scale, clf, "class_accuracy")
      fd = r and common.attempt(cdr, r, scale, clf, "classifier_fd")
      if not (acc and fd):
        recs.append(None)  # aligned by seed: None where a seed is missing
        continue
      recs.append({"accuracy_full": acc["metric_full"],
                   "accuracy_drop": acc["metric_drop"],
                   "accuracy_retained": acc["ratio"],
                   "fd_full": fd["metric_full"], "fd_drop": fd["metric_drop"],
                   "cdr_fd": fd["ratio"],
                   "band_flowed_share_at_drop":
                       acc.get("band_flowed_share_at_drop")})
    per_seed[name] = recs
  # Runs do not outlive their machine; seeds without a score here keep
  # the previous result file's record (same training hash), marked.
  per_seed = common.carry_records(
      {name: _previous_records(previous, name) for name in arms},
      per_seed, hashes, [k for k, _, _ in KEYS])
  for name, recs in per_seed.items():
    recs = [r or None for r in recs]  # aligned by seed: None where missing
    out[name] = {k: common.mean_std([r[k] for r in recs if r])
                 for k, _, _ in KEYS}
    done = [r for r in recs if r]
    out[name]["band_flowed_share_at_drop"] = (
        done[0]["band_flowed_share_at_drop"] if done else None)
    out[name]["per_seed"] = recs
  pairs = {}
  for k, f in PAIRS:
    if k in out and f in out:
      same = hashes[k] == hashes[f]
      pairs[k] = {key: stats.paired(
          [r and r[key] for r in out[k]["per_seed"]],
          [r and r[key] for r in out[f]["per_seed"]],
          lower_is_better=low, same_config=same,
          continuous=not key.startswith("accuracy")) for key, _, low in KEYS}
  rows = [[label] + [common.fmt(out[a][k]) for a in arms]
          for k, label, _ in KEYS]
  prows = [[label] + [stats.fmt(pairs[k][key]) for k, _ in PAIRS
                      if k in pairs] for key, label, _ in KEYS]
  kf = out["kflow_fourier_bandio"]
  judged = pairs["kflow_fourier_bandio"]
  md = [
      "# Claim 3: class-drop ratio",
      "",
      f"Class-conditional digits, {max(b)} steps, CFG 1.5, "
      f"{len(seeds)} seed(s), {scale.num_samples} samples, Euler "
      f"{scale.num_steps} steps; label dropped from t = {FRACTION} on "
      f"(`python -m kflow_jax.tools.class_drop_ratio --fraction={FRACTION}`)"
      ". Produced by `python -m experiments.class_drop`. The CDR here uses "
      "the digits classifier's features, not Inception: dropping the label "
      "also drops guidance, which restores diversity, so an FD ratio "
      "depends on the feature space; the retained class accuracy is the "
      "robust reading.",
      "",
      common.table([""] + [ARMS[a][0] for a in arms], rows),
      "",
      "K-Flow minus flow matching, seed by seed (mean difference, 95 % t "
      "interval, verdict; `experiments/stats.py`):",
      "",
      common.table([""] + [f"{ARMS[k][0]} - {ARMS[f][0]}" for k, f in PAIRS
                           if k in pairs], prows),
      "",
      f"K-Flow's flowed share of each band at the drop: "
      f"{kf['band_flowed_share_at_drop']}.",
      "",
      "Judged on the first pair (each method's best recipe):",
      "",
      *["- " + stats.sentence("K-Flow", "flow matching", LABELS[key],
                              judged[key]) for key in JUDGED],
      "",
      reading(judged["accuracy_retained"], judged["cdr_fd"]),
      "",
      *common.provenance(per_seed, {a: ARMS[a][0] for a in arms}, seeds,
                         "class_drop.json"),
  ]
  data = {"scale": scale._asdict(), "fraction": FRACTION, "paired": pairs,
          "hashes": hashes, **out}
  common.write_result(out_dir, "class_drop", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run, carries=True)
