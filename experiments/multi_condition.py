"""Per-band conditions on digits: the guidance map (E1) and hybrids (E2).

E1, no training: the class-conditional K-Flow digits run (2 Fourier bands
meeting at kappa 0.25, `CUT`; one label) sampled with a guidance weight
per band, (w0, w1) in {1, 1.5, 2, 3}^2
(`--config.sample.guidance_matrix=((w0,),(w1,))`); class accuracy and
classifier FD of each cell, paired against the best cell of uniform
guidance (w0 = w1) on the same seeds.

E2, hybrids: samples asked for class A in the coarse band and class B in
the fine band (A != B), judged by band classifiers (evaluators/hybrid.py:
acc_low = the low-pass part is an A, acc_high = the high-pass part is a B,
leak = the high-pass part is an A), and the classifier FD to real hybrids
P_low x_A + P_high x_B of held-out digits against the same model's FD on
consistent pairs (A, A). Arms (`ARMS`), each on every seed:

  slots_w10  2 condition slots (configs/digits.py:slots: slot dropout, 25 %
             band-mixed hybrids), guidance 10 on the fine slot in band 1
             (nested), CFG 1.5 elsewhere: the main arm
  slots      the same run with CFG 1.5 everywhere
  slots_nomix  condition slots trained without hybrids (band_mix 0)
  slots_mix50_w10, slots_mix100_w10  the main arm trained with 50 % and
             100 % hybrids
  slots_mix100  the 100 % run with CFG 1.5 everywhere
  slots_mix100_w3, slots_mix100_w5  the 100 % run with fine guidance 3, 5
  switch     the one-label K-Flow run, label A in band 0, B from the band
             edge on (config.sample.label_switch_t)
  switch_w10 the same with guidance 10 in band 1
  fm_switch  plain flow matching (Fourier, one band), the label switched at
             the same time
  fm_factorized  flow matching with the Factorized-Diffusion sum
             P_low v(A) + P_high v(B) over the K-Flow run's bands

    python -m experiments.multi_condition [--quick] [--root=DIR] [--out=DIR]
"""
import json
import os

import numpy as np

from experiments import common
from experiments import stats

COND = "configs/digits.py:cond"
SLOTS = "configs/digits.py:slots"
# The bands meet at kappa 0.25, not the config's 0.5: digits are 8x8 scans
# up-sampled to 16x16, so above 0.5 the fine band holds 0.7 % of the
# energy, mostly interpolation, and no label could show there; at 0.25 it
# holds the strokes' shape (a classifier of the high-pass part of held-out
# digits: 0.93 at 0.5 but on interpolation patterns a sampler cannot be
# asked for; docs/results/multi_condition.md gives the ceilings at 0.25).
CUT = ("--config.path.cutoffs=(0.0,0.25,1.0)",)
GUIDANCE = 1.5   # the digits recipe's CFG (configs/digits.py:cond)
# Fine-band guidance 10 (a first seed at 800 steps: fine-label accuracy
# 0.06 with CFG 1.5 everywhere, 0.26 with 5, 0.34 with 10 on the fine slot),
# given to condition slots (nested: the fine slot's term against the
# coarse-only prediction) and to the one-label switch (band 1's weight).
def w_slots(fine: float) -> dict:
  """Nested guidance: CFG 1.5, and `fine` on the fine slot in band 1."""
  return {"guidance_mode": "nested", "guidance_matrix":
          f"(({GUIDANCE},{GUIDANCE}),({GUIDANCE},{fine:g}))"}


W_SLOTS = w_slots(10.0)
W_SWITCH = {"guidance_matrix": f"(({GUIDANCE},),(10.0,))"}
# The arm every other is paired against. Chosen after the runs: the 25 %
# arm (slots_w10) was the one planned; 50 % and 100 % hybrids were trained
# when it missed the fine-label targets, the 100 % run was sampled with
# fine guidance 1.5, 3, 5 and 10, and guidance 5 met every target with the
# widest margins while keeping its FD below the baselines' (the page says
# so).
MAIN = "slots_mix100_w5"
PLANNED = "slots_w10"
# name -> (label, config, overrides, how it samples a pair, more sample
# options). Arms that differ only in sampling share one trained run
# (common.train: same resolved config).
ARMS = {
    "slots_w10": ("K-Flow, 2 condition slots, 25 % hybrids, fine guidance 10",
                  SLOTS, CUT, "slots", W_SLOTS),
    "slots": ("K-Flow, 2 condition slots, 25 % hybrids", SLOTS, CUT,
              "slots"),
    # More hybrids: at 25 % three fine labels in four agree with the coarse
    # digit, so the fine slot can be read off the coarse bands and the
    # network learns to lean on them (leak 0.28 with guidance 10).
    "slots_mix50_w10": ("K-Flow, 2 condition slots, 50 % hybrids, fine "
                        "guidance 10", SLOTS,
                        CUT + ("--config.cond.band_mix=0.5",), "slots",
                        W_SLOTS),
    "slots_mix100_w10": ("K-Flow, 2 condition slots, all hybrids, fine "
                         "guidance 10", SLOTS,
                         CUT + ("--config.cond.band_mix=1.0",), "slots",
                         W_SLOTS),
    # The same run with CFG 1.5 everywhere: what the fine guidance adds
    # once every training example is a hybrid.
    "slots_mix100": ("K-Flow, 2 condition slots, all hybrids", SLOTS,
                     CUT + ("--config.cond.band_mix=1.0",), "slots"),
    # Between the two: guidance 3 and 5 on the fine slot.
    "slots_mix100_w3": ("K-Flow, 2 condition slots, all hybrids, fine "
                        "guidance 3", SLOTS,
                        CUT + ("--config.cond.band_mix=1.0",), "slots",
                        w_slots(3.0)),
    "slots_mix100_w5": ("K-Flow, 2 condition slots, all hybrids, fine "
                        "guidance 5", SLOTS,
                        CUT + ("--config.cond.band_mix=1.0",), "slots",
                        w_slots(5.0)),
    "slots_nomix": ("K-Flow, 2 condition slots, no hybrids", SLOTS,
                    CUT + ("--config.cond.band_mix=0.0",), "slots"),
    "switch": ("K-Flow, one label, switched at the band edge", COND, CUT,
               "switch"),
    "switch_w10": ("K-Flow, one label, switched at the band edge, band-1 "
                   "guidance 10", COND, CUT, "switch", W_SWITCH),
    "fm_switch": ("flow matching, one label, switched at the same t", COND,
                  ("--config.path.num_scales=1",), "switch"),
    "fm_factorized": ("flow matching, factorized P_low v(A) + P_high v(B)",
                      COND, ("--config.path.num_scales=1",), "factorized"),
}
BASELINES = ("switch", "fm_switch", "fm_factorized")
# Every arm a condition-slot arm is held against (the switch with the
# slot arms' fine guidance too).
ALL_BASELINES = BASELINES + ("switch_w10",)
WEIGHTS = (1.0, 1.5, 2.0, 3.0)


def _train(root, scale, name, seed):
  config, overrides = ARMS[name][1:3]
  return common.attempt(common.train, root, scale._replace(pinned=()),
                        f"mc_{name}", config, overrides, seed,
                        scale.digits_budgets)


def path_record(run) -> dict:
  """The run's path.json (cut-offs and band times)."""
  with open(os.path.join(run.workdir, "path.json")) as fh:
    return json.load(fh)


def flag_tuple(values) -> str:
  """A tuple of floats as a --config.x=... value."""
  return "(" + ",".join(f"{float(v):g}" for v in values) + ",)"


def flag_rows(rows) -> str:
  """Rows of (coarse, fine) labels as a --config.sample.slot_labels value."""
  return "(" + ",".join(f"({a},{b})" for a, b in rows) + ")"


def _split(kflow_run):
  """evaluators.hybrid.BandSplit of the K-Flow run's two bands."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax import kamp
  from kflow_jax.evaluators import hybrid
  from kflow_jax.flow import paths
  rec = path_record(kflow_run)
  tr = kamp.get("fourier", shape=(16, 16, 1))
  return hybrid.BandSplit(paths.make_path(tr, cutoffs=tuple(rec["cutoffs"])))


def band_classifiers(root, scale, split) -> dict:
  """Low- and high-pass classifiers of digits (cached in ROOT)."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import classifier
  from kflow_jax.evaluators import hybrid
  from kflow_jax.evaluators import reference
  cut = "-".join(f"{c:g}" for c in split.path.cutoffs)
  files = {p: os.path.join(root, f"digits_band_{p}_{cut}_"
                           f"{scale.classifier_steps}.npz")
           for p in ("low", "high")}
  if all(os.path.exists(f) for f in files.values()):
    return {p: classifier.load(f) for p, f in files.items()}
  if scale.report_only:
    raise common.Missing(files["low"])
  x_tr, y_tr = reference.load_split("digits", "train")
  x_te, y_te = reference.load_split("digits", "test")
  clfs = hybrid.fit_band_classifiers(split, x_tr, y_tr, x_te, y_te,
                                     num_classes=10,
                                     steps=scale.classifier_steps,
                                     dataset="digits")
  for p, f in files.items():
    classifier.save(f, clfs[p])
  return clfs


def _extra(name) -> dict:
  return ARMS[name][4] if len(ARMS[name]) > 4 else {}


def _tag(name, what) -> str:
  """Cache tag of a sample set. Arms sharing a run (fm_switch and
  fm_factorized; slots and slots_w10; switch and switch_w10) differ by
  their sampling, so all but the first of each add their name."""
  own = _extra(name) or ARMS[name][3] == "factorized"
  return what + (f"_{name}" if own else "")


def _sample_opts(name, kflow_path, rows) -> dict:
  how = ARMS[name][3]
  opts = {"slot_labels": flag_rows(rows), "guidance": GUIDANCE, **_extra(name)}
  if how == "switch":
    opts["label_switch_t"] = flag_tuple(kflow_path["tau"][1:-1])
  elif how == "factorized":
    opts["factorized_cutoffs"] = flag_tuple(kflow_path["cutoffs"])
  return opts


def _hybrid_scores(root, scale, name, run, kflow, split, clfs, judge,
                   seed) -> dict:
  """acc_low, acc_high, leak, fd (hybrids) and fd_consistent of one run."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import classifier
  from kflow_jax.evaluators import hybrid
  from kflow_jax.evaluators import reference
  from kflow_jax.generate import sample_set
  step = max(scale.digits_budgets)
  kpath = path_record(kflow)
  x_te, y_te = reference.load_split("digits", "test")
  full = classifier.load(judge, dataset="digits")
  out = {}
  for kind, same in (("hybrid", False), ("consistent", True)):
    rows = tuple((a, b) for a in range(10) for b in range(10)
                 if (a == b) == same)
    made = common.sample(run, scale, step, _tag(name, f"mc_{kind}"),
                         _sample_opts(name, kpath, rows))
    data = sample_set.load_samples(made["dir"])
    x = data["images"].astype(np.float32) / 127.5 - 1.0
    pairs = np.asarray(data["labels"], np.int32)
    ref = hybrid.real_hybrids(split, x_te, y_te, pairs,
                              np.random.default_rng(1000 + seed))
    sc = hybrid.score(split, clfs, x, pairs, full, ref)
    if same:
      out["fd_consistent"] = sc["fd"]
      out["acc_consistent"] = sc["acc_low"]
    else:
      out.update({k: sc[k] for k in ("acc_low", "acc_high", "leak", "fd",
                                     "ceiling_low", "ceiling_high")})
  out["fd_ratio"] = out["fd"] / out["fd_consistent"]
  return out


def _grid(scale, name, run, kflow, out_dir):
  """The coarse-by-fine grid of `run` (--mode=hybrid, one noise), copied to
  out_dir; its file name."""
  kpath = path_record(kflow)
  opts = {k: v for k, v in _sample_opts(name, kpath, ()).items()
          if k != "slot_labels"}
  n = 10 if scale.all_arms else 2
  made = common.steer(run, scale, max(scale.digits_budgets), "hybrid",
                      _tag(name, "grid"), dict(rows=n, cols=n), opts)
  return made and common.copy_figure(made["png"], out_dir,
                                     f"multi_condition_{name}.png")


def real_scores(split, clfs, judge, seed) -> dict:
  """What a perfect sampler scores: real hybrids of held-out digits (and
  real consistent pairs) scored as the samples are, FD against a second,
  independent draw of the same pairs."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import classifier
  from kflow_jax.evaluators import hybrid
  from kflow_jax.evaluators import reference
  x_te, y_te = reference.load_split("digits", "test")
  full = classifier.load(judge, dataset="digits")
  out = {}
  for same in (False, True):
    # 540 of each, as the sample sets hold as many of either kind.
    pairs = np.asarray([(a, b) for a in range(10) for b in range(10)
                        if (a == b) == same] * (54 if same else 6), np.int32)
    draw = lambda k: hybrid.real_hybrids(split, x_te, y_te, pairs,
                                         np.random.default_rng(k))
    sc = hybrid.score(split, clfs, draw(2000 + seed), pairs, full,
                      draw(1000 + seed))
    if same:
      out["fd_consistent"] = sc["fd"]
    else:
      out.update({k: sc[k] for k in ("acc_low", "acc_high", "leak", "fd")})
  out["fd_ratio"] = out["fd"] / out["fd_consistent"]
  return out


def guidance_map(root, scale, judge) -> dict:
  """E1 on the one-label K-Flow run: per-seed accuracy and FD per cell."""
  cells = [(a, b) for a in WEIGHTS for b in WEIGHTS]
  if not scale.all_arms:
    cells = [(1.0, 1.0), (1.0, 3.0)]
  per = {f"{a:g},{b:g}": {"class_accuracy": [], "classifier_fd": []}
         for a, b in cells}
  for seed in scale.seeds:
    run = _train(root, scale, "switch", seed)
    for a, b in cells:
      ev = run and common.attempt(
          common.evaluate, run, scale, max(scale.digits_budgets),
          f"mc_w{a:g}_{b:g}",
          sample={"guidance": 1.0,
                  "guidance_matrix": f"(({a:g},),({b:g},))"},
          classifier=judge)
      for k in ("class_accuracy", "classifier_fd"):
        per[f"{a:g},{b:g}"][k].append(ev.get(k) if ev else None)
  return per


def _e1_section(per) -> list:
  uniform = [k for k in per if k.split(",")[0] == k.split(",")[1]]
  mean = lambda v: (np.mean([x for x in v if x is not None])
                    if any(x is not None for x in v) else np.inf)
  best = min(uniform, key=lambda k: mean(per[k]["classifier_fd"]))
  rows, pairs = [], {}
  for k, rec in per.items():
    pairs[k] = {m: stats.paired(rec[m], per[best][m],
                                lower_is_better=m == "classifier_fd",
                                continuous=m == "classifier_fd")
                for m in ("classifier_fd", "class_accuracy")}
    rows.append([k, common.fmt(common.mean_std(rec["class_accuracy"])),
                 common.fmt(common.mean_std(rec["classifier_fd"])),
                 stats.fmt(pairs[k]["classifier_fd"]),
                 stats.fmt(pairs[k]["class_accuracy"])])
  scored = any(v is not None for rec in per.values()
               for v in rec["classifier_fd"])
  return pairs, best, [
      "## E1: guidance per band (one-label K-Flow run)", "",
      "Guidance weight w0 on band 0 and w1 on band 1 "
      "(`--config.sample.guidance_matrix=((w0,),(w1,))`); paired against "
      + (f"the uniform cell with the lowest mean FD ({best})." if scored
         else "the uniform cell with the lowest mean FD (none scored yet)."),
      "",
      common.table(["w0,w1", "class accuracy", "classifier FD",
                    f"FD - ({best}) paired", f"accuracy - ({best}) paired"],
                   rows), ""]


# The targets for a per-band-condition arm (E2): coarse-label
# accuracy of the low-pass part >= 0.9 of its ceiling, fine-label accuracy
# of the high-pass part >= 0.7 of its ceiling and above the leak, >= 20
# points above the best baseline, FD to real hybrids <= 1.5x the run's FD
# on consistent pairs. Ceilings: the band classifiers on real hybrids.
TARGETS = {"low": 0.9, "high": 0.7, "lead": 0.20, "fd_ratio": 1.5}


def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def met(goal: dict) -> dict:
  """{target: met} of one condition-slot arm's entry of targets()' data
  (None for a target without a measurement)."""
  lead = (goal.get("lead") or {}).get("mean")
  fd = goal.get("fd_ratio")
  return {"low": goal["low_of_ceiling"] >= TARGETS["low"],
          "high": goal["high_of_ceiling"] >= TARGETS["high"],
          "leak": (goal.get("high_minus_leak") or {}).get("verdict")
                  == stats.BETTER,
          "lead": None if lead is None else lead >= TARGETS["lead"],
          "fd_ratio": None if fd is None else fd <= TARGETS["fd_ratio"]}


def targets(names, values, real) -> tuple:
  """(rows, data): each condition-slot arm against TARGETS. The best
  baseline is the one with the highest mean acc_high; the lead and the
  margin over the leak are paired by seed."""
  ceil = {m: _mean([r.get(m) for r in real]) for m in ("acc_low",
                                                       "acc_high")}
  bases = [n for n in names if n in ALL_BASELINES
           and _mean(values[n]["acc_high"]) is not None]
  best = max(bases, key=lambda n: _mean(values[n]["acc_high"]),
             default=None)
  word = lambda ok: "met" if ok else "missed"
  rows, data = [], {"ceilings": ceil, "best_baseline": best}
  for n in names:
    low, high = (_mean(values[n][m]) for m in ("acc_low", "acc_high"))
    if not n.startswith("slots") or None in (low, high) or None in (
        ceil["acc_low"], ceil["acc_high"]):
      continue
    r_low, r_high = low / ceil["acc_low"], high / ceil["acc_high"]
    over_leak = stats.paired(values[n]["acc_high"], values[n]["leak"],
                             lower_is_better=False, continuous=False)
    lead = (stats.paired(values[n]["acc_high"], values[best]["acc_high"],
                         lower_is_better=False, continuous=False)
            if best else {})
    fd = _mean(values[n]["fd_ratio"])
    data[n] = {"low_of_ceiling": r_low, "high_of_ceiling": r_high,
               "high_minus_leak": over_leak, "lead": lead, "fd_ratio": fd}
    ok = met(data[n])
    lead_txt = "-" if ok["lead"] is None else (
        f"{100 * lead['mean']:+.1f} points ({stats.fmt(lead)}), "
        f"{word(ok['lead'])}")
    rows.append([
        ARMS[n][0],
        f"{r_low:.3f}, {word(ok['low'])}",
        f"{r_high:.3f}, {word(ok['high'])}",
        f"{stats.fmt(over_leak)}, {word(ok['leak'])}",
        lead_txt,
        "-" if ok["fd_ratio"] is None else f"{fd:.2f}, "
        f"{word(ok['fd_ratio'])}"])
  return rows, data


def run(scale, root, out_dir) -> dict:
  judge = common.classifier(root, scale, dataset="digits")
  names = list(ARMS) if scale.all_arms else [MAIN, "switch"]
  per_seed = {n: [{} for _ in scale.seeds] for n in names}
  clfs = split = None
  for k, seed in enumerate(scale.seeds):
    kflow = _train(root, scale, "switch", seed)
    if kflow is None:
      continue
    if clfs is None:
      split = _split(kflow)
      clfs = common.attempt(band_classifiers, root, scale, split)
    for name in names:
      r = _train(root, scale, name, seed)
      if r and clfs:
        per_seed[name][k] = common.attempt(
            _hybrid_scores, root, scale, name, r, kflow, split, clfs,
            judge, seed) or {}
  real = [real_scores(split, clfs, judge, seed) if clfs else {}
          for seed in scale.seeds]
  kflow0 = _train(root, scale, "switch", scale.seeds[0])
  figs = {}
  for name in names:
    r = _train(root, scale, name, scale.seeds[0])
    figs[name] = r and kflow0 and common.attempt(_grid, scale, name, r,
                                                 kflow0, out_dir)
  # fd and fd_consistent beside their ratio: a run can lower the ratio by
  # getting worse on consistent pairs.
  metrics = (("acc_high", False), ("acc_low", False), ("leak", True),
             ("fd_ratio", True), ("fd", True), ("fd_consistent", True))
  values = {n: {m: [rec.get(m) for rec in per_seed[n]] for m, _ in metrics}
            for n in names}
  real_row = ["real hybrids of held-out digits (the ceiling)"] + [
      common.fmt(common.mean_std([r.get(m) for r in real]))
      for m, _ in metrics]
  # Accuracies over a few hundred samples tie by chance: only the FD ratio
  # is continuous (stats.paired's "identical" reading).
  paired = {n: {m: stats.paired(values[MAIN][m], values[n][m],
                                lower_is_better=low,
                                continuous=m.startswith("fd"))
                for m, low in metrics}
            for n in names if n != MAIN}
  done = sum(v is not None for v in values[MAIN]["acc_high"])
  rows = [[ARMS[n][0]] + [common.fmt(common.mean_std(values[n][m]))
                          for m, _ in metrics] for n in names]
  ceil = {p: (clfs[p].accuracy if clfs else None) for p in ("low", "high")}
  goal_rows, goals = targets(names, values, real)
  e1, best, e1_md = guidance_map(root, scale, judge), None, []
  if e1:
    e1_pairs, best, e1_md = _e1_section(e1)
  md = [
      "# Per-band conditions on digits: guidance map and hybrids", "",
      f"Scale `{scale.name}`: runs of {max(scale.digits_budgets)} steps, "
      f"seeds {list(scale.seeds)}, {scale.num_samples} samples per set, "
      f"Euler {scale.num_steps} steps, CFG {GUIDANCE}. Produced by "
      "`python -m experiments.multi_condition`.", "",
      *e1_md,
      "## E2: hybrids (coarse class A, fine class B, A != B)", "",
      f"Seeds with results: {done} of {len(scale.seeds)} (± is over "
      "those seeds).", "",
      "Band classifiers' held-out accuracy on their part of real digits "
      "as stored: "
      f"low-pass {common.fmt({'mean': ceil['low'], 'std': 0, 'n': 1})}, "
      f"high-pass {common.fmt({'mean': ceil['high'], 'std': 0, 'n': 1})}. "
      "fd = classifier FD of the hybrids to real hybrids; fd_consistent = "
      "the same run's FD on consistent pairs (A, A) to real digits; "
      "fd_ratio = fd / fd_consistent.", "",
      common.table(["arm"] + [m for m, _ in metrics], rows + [real_row]),
      "",
      f"The arm planned before the runs was \"{ARMS[PLANNED][0]}\"; it "
      "missed the fine-label targets (below), so 50 % and 100 % hybrids "
      "were trained on the same seeds and the 100 % run sampled with "
      "fine-slot guidance 1.5, 3, 5 and 10; the arm paired against every "
      f"other here, \"{ARMS[MAIN][0]}\", was picked after seeing them: "
      "a choice among three mixing shares and four guidance weights, not "
      "a pre-registered comparison.", "",
      f"{ARMS[MAIN][0]} against each arm, paired by seed (difference, 95 % "
      "interval, verdict):", "",
      *[f"- {stats.sentence(ARMS[MAIN][0], ARMS[n][0], m, paired[n][m])}"
        for n in paired for m, _ in metrics], "",
      "### Against the targets", "",
      "Each condition-slot arm against the targets set before the runs: "
      f"acc_low at least {TARGETS['low']} of its ceiling and acc_high at "
      f"least {TARGETS['high']} of its (the real hybrids' row above), "
      "acc_high above the leak (paired by seed), at least "
      f"{100 * TARGETS['lead']:.0f} points above the best baseline "
      f"({ARMS[goals['best_baseline']][0] if goals['best_baseline'] else '-'}"
      f", by mean acc_high; paired by seed), fd_ratio at most "
      f"{TARGETS['fd_ratio']}.", "",
      common.table(["arm", "acc_low / ceiling", "acc_high / ceiling",
                    "acc_high - leak", "acc_high - best baseline",
                    "fd_ratio"], goal_rows) if goal_rows else
      "No condition-slot arm has results yet.", "",
      "## Grids (seed 0)", "",
      "`--mode=hybrid`: row i asks for class i in the coarse band, column j "
      "for class j in the fine band, every cell from one noise "
      f"(CFG {GUIDANCE}).", "",
      *[f"{ARMS[n][0]}:\n\n![{n}]({f})\n" for n, f in figs.items() if f]]
  data = {"scale": scale._asdict(), "per_seed": per_seed, "paired": paired,
          "ceilings": ceil, "real": real, "figures": figs, "guidance_map": e1,
          "targets": goals,
          "guidance_map_best_uniform": best}
  common.write_result(out_dir, "multi_condition", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
