"""docs/results/README.md and findings.md: protocol, headline numbers, what
holds and what does not, written from the scripts' results (never by hand,
so they cannot drift from the tables).

Every verdict is the paired rule of experiments/stats.py (arm against its
control seed by seed: mean difference, 95 % t interval, better / worse /
not resolved / one seed / same config / identical), read from the results
dicts; findings.md's interpretive sentences are chosen by those verdicts.
Results without per-seed values (written before the paired rule) cannot
give verdicts: findings.md is then left as it is.

    python -m experiments.summary --dir=DIR   # rewrite from DIR/*.json
"""
import json
import os

from experiments import class_drop
from experiments import common
from experiments import half_cost
from experiments import mnist
from experiments import molecules
from experiments import multi_condition
from experiments import quality
from experiments import recipe
from experiments import stats
from experiments import steerability

# The scripts' results that carry their paired comparisons.
PAIRED_KEYS = {"quality": "paired", "recipe": "paired",
               "class_drop": "paired", "steerability": "paired",
               "adaptive": "paired"}
ORDER = (stats.BETTER, stats.WORSE, stats.NOT_RESOLVED, stats.EQUIVALENT,
         stats.ONE_SEED, stats.SAME_CONFIG, stats.IDENTICAL)


def has_paired(r: dict) -> bool:
  """True when every script's result holds its paired comparisons."""
  return all(k in r and key in r[k] for k, key in PAIRED_KEYS.items())


def grouped(items) -> str:
  """[(name, paired)] -> 'worse: a (+3.1 [1.2, 5.0] worse), b (...);
  not resolved: c (...)', grouped by verdict."""
  groups = {}
  for name, p in items:
    if p and p.get("mean") is not None:
      groups.setdefault(p["verdict"], []).append(f"{name} ({stats.fmt(p)})")
  return "; ".join(f"{v}: {', '.join(groups[v])}" for v in ORDER
                   if v in groups) or "no data"


def lead(subject: str, items, a="K-Flow", b="flow matching") -> str:
  """One sentence chosen by the set of verdicts of [(name, paired)]."""
  vs = {p["verdict"] for _, p in items if p and p.get("mean") is not None}
  if not vs:
    return f"{subject}: no data."
  if vs == {stats.WORSE}:
    word = f"{a} is worse than {b} on every arm, beyond the 95 % interval"
  elif vs == {stats.BETTER}:
    word = f"{a} is better than {b} on every arm, beyond the 95 % interval"
  elif vs == {stats.NOT_RESOLVED}:
    word = (f"not resolved on any arm: no difference between {a} and {b} "
            "was detected, which is not evidence that they are equal")
  elif vs == {stats.ONE_SEED}:
    word = "one seed: no interval, no verdict"
  else:
    worse = stats.WORSE in vs and f"{a} is worse on some arms"
    better = stats.BETTER in vs and f"better on some"
    word = ", ".join(w for w in (worse, better) if w) or "mixed"
    word += " (per arm below)"
  return f"{subject}: {word}."


def _quality_table(q, data, metric, budget):
  fm = q[data]["fm"][str(budget)][metric]
  pairs = q.get("paired", {}).get(data, {})
  rows = []
  for name, per in q[data].items():
    s = per[str(budget)][metric]
    p = pairs.get(name, {}).get(str(budget), {}).get(metric)
    rows.append([name, common.fmt(s),
                 "-" if name == "fm" or s["mean"] is None or fm["mean"] is None
                 else f"{s['mean'] / fm['mean']:.2f}",
                 "-" if p is None else stats.fmt(p)])
  return common.table(["arm", metric, "/ flow matching",
                       "arm - fm, seed by seed (95 % interval)"], rows)


# Restoration's paired cells shown in the README table (when the results
# hold them: experiments/restoration.py, each flow against its own start).
RESTORE_PAIRS = ("K-Flow - start (psnr)", "FM - start (psnr)",
                 "K-Flow - FM (psnr)", "K-Flow - start (fd)")


def _restorations(rs):
  """[(degradation, its headline result)] of restoration.json."""
  return [(d, o) for d, o in rs.items()
          if isinstance(o, dict) and "kflow" in o]


def _restoration_rows(rs):
  """The restoration table; the start-estimate column and the paired
  cells where the results hold them."""
  rows = []
  for d, o in _restorations(rs):
    start = o.get("estimate") or {}
    pairs = o.get("paired") or {}
    rows.append([
        d, common.fmt(o["kflow"]["psnr"], 4), common.fmt(o["fm"]["psnr"], 4),
        common.fmt(start.get("psnr"), 4),
        f"{common.fmt(o['baseline']['psnr'], 4)} "
        f"({o.get('baseline_name', '-')})",
        common.fmt(o["kflow"]["ssim"]), common.fmt(o["fm"]["ssim"]),
        common.fmt(start.get("ssim")),
        common.fmt(o["kflow"].get("fd")), common.fmt(o["fm"].get("fd")),
        common.fmt(start.get("fd"))]
        + [stats.fmt(pairs[k]) if k in pairs else "-"
           for k in RESTORE_PAIRS])
  return common.table(
      ["degradation", "PSNR K-Flow", "PSNR FM", "PSNR start estimate",
       "PSNR baseline", "SSIM K-Flow", "SSIM FM", "SSIM start estimate",
       "FD K-Flow", "FD FM", "FD start estimate", *RESTORE_PAIRS], rows)


def _mnist_section(m) -> list:
  if not m:
    return []
  out = ["## MNIST-5k (claims 1, 3, 4 on 32x32 digits)", "",
         "Every K-Flow arm minus flow matching, seed by seed "
         "([mnist.md](mnist.md)):", ""]
  for title, key, metrics in (("quality", "quality", mnist.QUALITY),
                              ("class drop", "class_drop", mnist.DROP),
                              ("steerability", "steerability", mnist.STEER)):
    pairs = m.get(key) or {}
    if not pairs:
      continue
    out += [f"{title}:", "", common.table(
        ["arm"] + [k for k, _ in metrics],
        [[mnist.ARMS[n][0]] + [stats.fmt(per[k]) if k in per else "-"
                               for k, _ in metrics]
         for n, per in pairs.items()]), ""]
  return out


def _cost(out_dir) -> list:
  f = os.path.join(out_dir, "timing.json")
  if not os.path.exists(f):
    return []
  with open(f) as fh:
    t = json.load(fh)
  s = t.get("seconds") or {}
  total = sum(s.values())
  cost = t.get("measured_cost") or {}
  if t.get("report_only"):
    # A --report call trains nothing: its own time says nothing of the
    # evidence's cost.
    out = ["These files were rewritten by `run_all --report` from the "
           "runs and seed records already gathered."]
    if cost.get("commands"):
      out.append(f"The runs under its root cost {cost['seconds'] / 3600:.2f}"
                 f" h of wall time on this machine ({cost['commands']} "
                 "training, sampling and scoring commands, each one's own "
                 "wall time summed over the calls that made them, also where "
                 "several ran side by side); seeds carried from earlier result "
                 "files were measured on earlier machines and are not in "
                 "that sum.")
    return [" ".join(out), ""]
  out = [f"The `run_all` call that wrote these files took {total / 3600:.2f}"
         " h (" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in s.items())
         + ")."]
  if cost.get("commands"):
    out.append(f"The evidence itself, every training, sampling and scoring "
               f"command summed over all calls that gathered it: "
               f"{cost['seconds'] / 3600:.2f} h of wall time on this "
               f"machine, {cost['commands']} commands.")
  return [" ".join(out), ""]


def _half_cost_section(hc) -> list:
  """adaptive.md's answer, reference by reference (experiments/half_cost.py
  reads it from the paired verdicts of both quality metrics)."""
  if not hc or not hc.get("paired"):
    return []
  out = ["## Scale-adaptive compute at half the cost (MNIST-5k, 32x32)", "",
         "Does a scale-adaptive K-Flow arm reach flow matching's quality "
         "(neither classifier FD nor class accuracy resolved worse, seed by "
         "seed) at half its training and sampling FLOPs? From "
         "[adaptive.md](adaptive.md), where every arm's FLOPs and paired "
         "differences are:", ""]
  for ref, end in half_cost.conclusions(hc):
    out += [f"Against {ref}: " + " ".join(end), ""]
  return out


def _multi_condition_section(mc) -> list:
  """multi_condition.md's main arm against each baseline, and how each
  condition-slot arm met the targets set before the runs."""
  if not mc or not mc.get("paired"):
    return []
  arms, main = multi_condition.ARMS, multi_condition.MAIN
  keys = ("acc_high", "leak", "fd_ratio")
  rows = [[arms[n][0]] + [stats.fmt(per[k]) if k in per else "-"
                          for k in keys]
          for n, per in mc["paired"].items()
          if n in multi_condition.ALL_BASELINES]
  met = []
  for n, g in (mc.get("targets") or {}).items():
    if n in arms and isinstance(g, dict):
      ok = multi_condition.met(g).values()
      met.append(f"{arms[n][0]}: {sum(bool(v) for v in ok)} of {len(ok)}")
  return [
      "## Per-band conditions (digits, condition slots)", "",
      f"A class label for the coarse band and another for the fine band "
      f"([multi_condition.md](multi_condition.md)). {arms[main][0]} (chosen "
      "after seeing three mixing shares and four guidance weights, not "
      "pre-registered) minus each baseline, seed by seed (acc_high: the "
      "fine label read off the fine band, higher is better; leak: the "
      "coarse label read there, lower is better):", "",
      common.table(["baseline", *keys], rows), "",
      "Targets set before the runs met (acc_low and acc_high against their "
      "ceilings, acc_high above the leak, a lead over the best baseline, "
      "fd_ratio): " + "; ".join(met) + ".", ""]


def _molecules_section(mo) -> list:
  """molecules.md's paired comparisons of K-Flow against the one-band and
  no-flow baselines."""
  if not mo or not mo.get("comparisons"):
    return []
  titles = molecules.row_titles()
  keys = [m for m, _ in molecules.METRICS]
  return [
      "## Molecular assembly (offline proxy of COD-Cluster17)", "",
      "AssembleFlow's metrics on the test split, arm minus arm seed by seed "
      "([molecules.md](molecules.md); PM-center, PM-atom and collision: "
      "lower is better; separation: higher):", "",
      common.table(["comparison", *keys],
                   [[f"{titles[a]} - {titles[b]}"]
                    + [stats.fmt(mo["comparisons"][f"{a}-{b}"][m])
                       for m in keys]
                    for a, b in molecules.COMPARISONS
                    if f"{a}-{b}" in mo["comparisons"]]), ""]


def readme(scale, r, out_dir, with_findings: bool) -> str:
  q, rc, cd, st, rs, ad = (r["quality"], r["recipe"], r["class_drop"],
                           r["steerability"], r["restoration"],
                           r["adaptive"])
  db, pb = max(scale.digits_budgets), max(scale.patches_budgets)
  kf, fm = cd["kflow_fourier_bandio"], cd["fm_logit_normal"]
  cdp = (cd.get("paired") or {}).get("kflow_fourier_bandio", {})
  stp = st.get("paired") or {}
  adp = ad.get("paired") or {}
  md = [
      "# Evidence: the paper's claims at CPU scale",
      "",
      "Every number here is produced by `python -m experiments.run_all` "
      f"(scale `{scale.name}`: seeds {list(scale.seeds)}, digits budgets "
      f"{list(scale.digits_budgets)} steps, patches "
      f"{list(scale.patches_budgets)} steps, {scale.num_samples} samples "
      "per score), which trains, samples, restores and scores through "
      "`python -m kflow_jax.main` exactly as a user would. Spread: ± one "
      "standard deviation over seeds. Verdicts: the paired rule of "
      "`experiments/stats.py` (each arm minus its control seed by seed, "
      "mean and 95 % t interval; \"not resolved\": the interval holds 0, "
      "no difference detected, which is not evidence of equality; \"one "
      "seed\": no verdict). The detailed tables and figures:",
      "",
      "- [quality.md](quality.md): K-Flow (fourier, dct, wavelet haar and "
      "db4, pca) against flow matching, both budgets, solvers at equal NFE",
      "- [recipe.md](recipe.md): ablations of bands, band times, loss "
      "weights, t sampling, band I/O, windows, backbone, step allocation; "
      "the combined recipe on every seed",
      "- [class_drop.md](class_drop.md): class-drop ratio",
      "- [steerability.md](steerability.md): band noise mixing",
      "- [restoration.md](restoration.md): low resolution and blur",
      "- [adaptive.md](adaptive.md): scale-adaptive compute at half the "
      "cost? MNIST-5k 32x32, the FLOPs and quality of every arm "
      "(`experiments/half_cost.py`)",
      "- [adaptive_digits.md](adaptive_digits.md): scale-adaptive compute "
      "on 16x16 digits against flow matching at equal steps and equal wall "
      "time",
      *(["- [mnist.md](mnist.md): claims 1, 3 and 4 on MNIST-5k (32x32)"]
        if r.get("mnist") else []),
      *(["- [multi_condition.md](multi_condition.md): per-band conditions "
         "(condition slots), the guidance map and coarse-by-fine hybrids "
         "against the label switch and the factorized sum "
         "(`experiments/multi_condition.py`)"]
        if r.get("multi_condition") else []),
      *(["- [molecules.md](molecules.md): molecular assembly on the "
         "offline proxy of COD-Cluster17, K-Flow over graph-Fourier bands "
         "against rigid flow matching and a regression "
         "(`experiments/molecules.py`); "
         "[assembly_baselines.md](assembly_baselines.md): the trivial "
         "predictions and where the motion lies across the bands"]
        if r.get("molecules") else []),
      "",
      *_cost(out_dir),
      "## Quality (claim 1)",
      "",
      "With the recipe the configs shipped before the recipe study "
      "(uniform t, no band I/O); each method's best recipe is under "
      "Recipe below.",
      "",
      f"digits, classifier FD at {db} steps (lower is better):",
      "",
      _quality_table(q, "digits", "classifier_fd", db),
      "",
      f"natural_patches, spectrum error in the finest third at {pb} steps:",
      "",
      _quality_table(q, "patches", "spectrum_error_fine", pb),
      "",
      *quality.verdict(q.get("paired", {}).get("digits", {}),
                       "classifier_fd", db),
      *quality.verdict(q.get("paired", {}).get("patches", {}),
                       "spectrum_error_fine", pb),
      "",
      "## Recipe (claim 2)",
      "",
      f"Best single change on digits (one seed picks it): "
      f"**{rc['best']['arm']}**, classifier FD {common.fmt(rc['best'])} "
      f"against the shipped recipe's {common.fmt(rc['shipped'])} and flow "
      f"matching's {common.fmt(rc['fm'])}.",
      "",
      *[f"- {n}: {stats.fmt(p)}" for n, p in
        (rc.get("confirmed_paired") or {}).items()],
      "",
      *([f"The combined recipe (band I/O with logit-normal t per band, "
         f"the digits default now) minus flow matching with logit-normal "
         f"t, seed by seed: "
         + "; ".join(f"{k}: {stats.fmt(v)}" for k, v in
                     rc["combined_paired"].items()) + ".", ""]
        if rc.get("combined_paired") else []),
      "## Class drop (claim 3)",
      "",
      f"Each with its best recipe, label dropped at t = "
      f"{class_drop.FRACTION}. Class accuracy retained (dropped / kept): "
      f"K-Flow {common.fmt(kf.get('accuracy_retained'))}, flow matching "
      f"{common.fmt(fm.get('accuracy_retained'))}; CDR (classifier FD "
      f"dropped / kept): K-Flow {common.fmt(kf['cdr_fd'])}, flow matching "
      f"{common.fmt(fm['cdr_fd'])}.",
      "",
      *["- " + stats.sentence("K-Flow", "flow matching",
                              class_drop.LABELS[k], cdp[k])
        for k in class_drop.JUDGED if k in cdp],
      "",
      "## Steerability (claim 4)",
      "",
      "Gap = correlation with shared noise minus with other noise (coarse: "
      "band 0 across rows; fine: band 1 across columns); K-Flow minus flow "
      "matching seed by seed:",
      "",
      common.table(["pair", "K-Flow coarse gap", "FM coarse gap",
                    "K-Flow fine gap", "FM fine gap", "coarse: K-Flow - FM",
                    "fine: K-Flow - FM"],
                   [[label, common.fmt(st[k].get("coarse_gap")),
                     common.fmt(st[f].get("coarse_gap")),
                     common.fmt(st[k].get("fine_gap")),
                     common.fmt(st[f].get("fine_gap")),
                     stats.fmt(stp[k]["coarse_gap"]) if k in stp else "-",
                     stats.fmt(stp[k]["fine_gap"]) if k in stp else "-"]
                    for k, f, label in steerability.PAIRS
                    if k in st and f in st]),
      "",
      *[f"- {label}: K-Flow's coarse band runs with band I/O, so its "
        "within-row correlation is 1 by construction (band 0 never sees the "
        "fine noise): guaranteed, not learned."
        for k, _, label in steerability.PAIRS
        if steerability.by_construction(k)],
      "",
      "## Restoration (claim 5)",
      "",
      "Each method with its best recipe (restoration.md also has both "
      "with the recipe they were first run with):",
      "",
      _restoration_rows(rs),
  ]
  md += ["", "## Scale-adaptive compute on 16x16 digits (claim 6)", "",
         "Training step cost (flow matching / arm, interleaved runs), "
         "classifier FD at flow matching's wall time, and the arm minus its "
         "flow-matching reference seed by seed:", "",
         common.table(
             ["arm", "cost ratio", "FD, flow matching's time",
              "FD - flow matching (95 % interval)"],
             [[name, "-" if not ad["step_time_s"].get(name) else
               f"{ad['step_time_s']['fm'] / ad['step_time_s'][name]:.2f}",
               common.fmt((ad["same_wall_time"].get(name) or
                           ad["same_steps"][name])["classifier_fd"]),
               stats.fmt(adp.get("same_wall_time", {}).get(name) or
                         adp.get("same_steps", {}).get(name) or {})]
              for name in ad["same_steps"]]), ""]
  md += _mnist_section(r.get("mnist"))
  md += _half_cost_section(r.get("half_cost"))
  md += _multi_condition_section(r.get("multi_condition"))
  md += _molecules_section(r.get("molecules"))
  if with_findings:
    md += ["## What holds and what does not", "",
           "See [findings.md](findings.md): the reading of these numbers, "
           "written from the same results, each reading chosen by its "
           "verdict."]
  return "\n".join(md) + "\n"


def findings(scale, r) -> str:
  """findings.md from the results: every number and verdict templated,
  every interpretive sentence chosen by the verdict it reads."""
  q, rc, cd, st, rs, ad = (r["quality"], r["recipe"], r["class_drop"],
                           r["steerability"], r["restoration"],
                           r["adaptive"])
  db, pb = str(max(scale.digits_budgets)), str(max(scale.patches_budgets))
  comb = list((rc.get("combined_paired") or {}).items())
  shipped_q = [(n, per[db]["classifier_fd"])
               for n, per in q["paired"]["digits"].items()]
  patches_q = [(n, per[pb]["spectrum_error_fine"])
               for n, per in q["paired"]["patches"].items()]
  cdp = cd["paired"].get("kflow_fourier_bandio", {})
  kf, fm = cd["kflow_fourier_bandio"], cd["fm_logit_normal"]
  md = [
      "# Reading the numbers",
      "",
      "Written by `python -m experiments.run_all` (`experiments/summary.py`)"
      f" from the result files of this directory (scale `{scale.name}`, "
      f"seeds {list(scale.seeds)}; one-change ablations on seeds "
      f"{list(scale.ablation_seeds)}): every number and verdict below is "
      "read from them, and every reading is chosen by its verdict. "
      "Verdicts: the paired rule of `experiments/stats.py` (arm minus "
      "control seed by seed, mean [95 % t interval]); \"not resolved\" is "
      "a failure to detect a difference, not evidence of equality; \"one "
      "seed\" has no verdict; \"same config\" and \"identical\" are not "
      "effects. The runs pin the recipe they were trained with "
      "(`experiments/common.py`), so a rerun reproduces them even where "
      "the shipped configs have moved on.",
      "",
      "## The short answer",
      "",
  ]
  short = []
  if comb:
    short.append(
        "- " + lead("**Quality, each method's best recipe** (digits, "
                    "classifier FD, K-Flow with band I/O and logit-normal t "
                    "per band against flow matching with logit-normal t)",
                    comb) + " " + grouped(comb) + ".")
  short.append("- " + lead(
      "**Quality, the recipe first shipped** (digits, classifier FD, "
      f"{db} steps)", shipped_q) + " " + grouped(shipped_q) + ".")
  m = r.get("mnist") or {}
  if m.get("quality"):
    mq = [(mnist.ARMS[n][0], per.get("classifier_fd"))
          for n, per in m["quality"].items()]
    short.append("- " + lead("**Quality on MNIST-5k** (32x32, classifier FD, "
                             "shipped recipes)", mq) + " " + grouped(mq) + ".")
  if cdp:
    short.append(
        f"- **Class drop** (label dropped at t = {class_drop.FRACTION}, best "
        f"recipes): K-Flow keeps {common.fmt(kf['accuracy_retained'])} of "
        "its class accuracy (dropped / kept), flow matching "
        f"{common.fmt(fm['accuracy_retained'])}. "
        + class_drop.reading(cdp["accuracy_retained"], cdp["cdr_fd"]))
  stp = st["paired"]
  for k, f, label in steerability.PAIRS:
    if k not in stp:
      continue
    p = stp[k]["fine_gap"]
    short.append(
        f"- **Steerability, {label.lower()}**: fine-band gap K-Flow "
        f"{common.fmt(st[k]['fine_gap'])}, flow matching "
        f"{common.fmt(st[f]['fine_gap'])}; "
        + stats.sentence("K-Flow", "flow matching", "fine-band gap", p)
        + (" The coarse band's within-row correlation of "
           f"{common.fmt(st[k]['band_0_same_row'])} is guaranteed by band "
           "I/O (band 0 never sees the fine noise), not learned."
           if steerability.by_construction(k) else ""))
  for k, p in (rc.get("patches_paired") or {}).items():
    if p["verdict"] != stats.ONE_SEED:
      short.append("- **natural_patches band times** (spectrum error in the "
                   "finest third): " + stats.sentence(
                       k, list(recipe.PATCHES)[0], "spectrum error, fine", p))
  own = [(d, (o.get("paired") or {}).get("K-Flow - start (psnr)"))
         for d, o in _restorations(rs)]
  own = [(d, p) for d, p in own if p]
  if own:
    short.append("- " + lead("**Restoration against its own start** (K-Flow "
                             "minus the estimate it starts from, PSNR)", own,
                             "K-Flow's flow", "its start estimate")
                 + " " + grouped(own) + ".")
  wins = [(d, _start_wins(o.get("arms") or {})) for d, o in _restorations(rs)
          if o.get("arms")]
  if wins:
    short.append(
        "- **Restoration, every setting**: K-Flow's flow beats its own "
        "start estimate in PSNR and in classifier FD, both beyond the 95 % "
        "interval, " + "; ".join(
            f"at {d} with {len(w)} of {len(rs[d]['arms'])} settings"
            + (f" ({', '.join(w)})" if w else "") for d, w in wins)
        + " (restoration.md).")
  adp = ad["paired"]
  for name, p in adp.get("same_wall_time", {}).items():
    ref = "fm_logit" if name.endswith("_logit") else "fm"
    short.append(f"- **Scale-adaptive K-Flow ({name}) at {ref}'s wall "
                 f"time**: " + stats.sentence(name, ref, "classifier FD", p))
  for ref, end in (half_cost.conclusions(r["half_cost"])
                   if (r.get("half_cost") or {}).get("paired") else []):
    short.append(f"- **Scale-adaptive compute at half the cost** (MNIST-5k, "
                 f"against {ref}): " + end[0])
  mc = r.get("multi_condition") or {}
  if mc.get("paired"):
    main = multi_condition.ARMS[multi_condition.MAIN][0]
    hi = [(multi_condition.ARMS[n][0], per.get("acc_high"))
          for n, per in mc["paired"].items()
          if n in multi_condition.BASELINES]
    short.append("- " + lead(f"**Per-band conditions** ({main} against the "
                             "baselines, fine label read off the fine band)",
                             hi, main, "the baseline") + " "
                 + grouped(hi) + ".")
  mo = r.get("molecules") or {}
  if mo.get("comparisons"):
    short.append("- " + lead("**Molecular assembly** (K-Flow, 4 bands, "
                             "minus rigid flow matching at 40 calls, "
                             "PM-center and PM-atom)",
                             _molecule_pairs(mo, ("kflow", "fm40"))) + " "
                 + grouped(_molecule_pairs(mo, ("kflow", "fm40"))) + ".")
  for line in short:
    md.append(line)
  md += ["", "## Claim 1: quality at equal compute", ""]
  md += ["Recipe first shipped (uniform t, no band I/O), digits, "
         f"classifier FD at {db} steps, K-Flow minus flow matching:", ""]
  md += ["- " + stats.sentence(n, "flow matching", "classifier FD", p)
         for n, p in shipped_q]
  md += ["", f"natural_patches, spectrum error in the finest third at {pb} "
         "steps:", ""]
  md += ["- " + stats.sentence(n, "flow matching", "spectrum error, fine",
                               p) for n, p in patches_q]
  if comb:
    md += ["", "Each method's best recipe (recipe.md, \"The combined "
           "recipe\"):", ""]
    md += ["- " + stats.sentence(n, "flow matching + logit-normal",
                                 "classifier FD", p) for n, p in comb]
  md += ["", "## Claim 2: the recipe", ""]
  md += _recipe_reading(rc)
  md += ["## Claim 3: class drop", "",
         f"Label kept for the first {class_drop.FRACTION:.0%} of t, dropped "
         "after; the retained class accuracy (dropped / kept) is the robust "
         "reading, the classifier-FD CDR also moves because dropping the "
         "label drops guidance.", ""]
  for k, f in class_drop.PAIRS:
    if k not in cd["paired"]:
      continue
    md += [f"{class_drop.ARMS[k][0]} against {class_drop.ARMS[f][0]}:", ""]
    md += ["- " + stats.sentence("K-Flow", "flow matching", label,
                                 cd["paired"][k][key])
           for key, label, _ in class_drop.KEYS]
    md += ["- " + class_drop.reading(cd["paired"][k]["accuracy_retained"],
                                     cd["paired"][k]["cdr_fd"]), ""]
  md += ["## Claim 4: steerability", ""]
  for k, _, label in steerability.PAIRS:
    if k in stp:
      md += [f"{label}:", ""] + [
          "- " + stats.sentence("K-Flow", "flow matching", g, stp[k][g])
          for g, *_ in steerability.GAPS] + [""]
  md += ["## Claim 5: restoration", ""]
  md += _restoration_reading(rs)
  md += ["## Scale-adaptive compute", ""]
  md += _adaptive_reading(ad)
  if m:
    md += ["## MNIST-5k", ""]
    for key, metrics in (("quality", mnist.QUALITY),
                         ("class_drop", mnist.DROP),
                         ("steerability", mnist.STEER)):
      for n, per in (m.get(key) or {}).items():
        md += ["- " + stats.sentence(mnist.ARMS[n][0], "flow matching", k,
                                     per[k]) for k, _ in metrics if k in per]
    md += [""]
  md += _beyond_readings(r)
  md += ["## Not measured here", "",
         "- The paper's regime (256x256 latents, DiT-L/2, hundreds of "
         "thousands of steps): no accelerator was available.",
         "- The quality table of claim 1 at both budgets and on patches, the "
         "solver table and the scale-adaptive study with the new recipe "
         "(band I/O, logit-normal t per band).",
         "- The paper's class-drop ratio in Inception FID: the CDR here is "
         "in classifier features.",
         "- Scale-adaptive compute on natural images at 32x32 and with DiT "
         "backbones (adaptive.md's DiT rows are \"-\"), and against flow "
         "matching trained to saturation.",
         "- Molecular assembly on COD-Cluster17 itself (not downloadable "
         "here): the numbers are on the offline proxy."]
  return "\n".join(md) + "\n"


def _molecule_pairs(mo, pair, metrics=("pm_center", "pm_atom")) -> list:
  a, b = pair
  per = mo["comparisons"].get(f"{a}-{b}") or {}
  return [(m, per[m]) for m in metrics if m in per]


def _beyond_readings(r) -> list:
  """findings.md's sections on the pages past the paper's digits claims:
  scale-adaptive compute on MNIST-5k, per-band conditions, molecules."""
  out = []
  hc = r.get("half_cost") or {}
  if hc.get("paired"):
    out += ["## Scale-adaptive compute at half the cost (MNIST-5k)", ""]
    for ref, end in half_cost.conclusions(hc):
      out += [f"Against {ref}:", ""] + [f"- {line}" for line in end] + [""]
  mc = r.get("multi_condition") or {}
  if mc.get("paired"):
    arms, main = multi_condition.ARMS, multi_condition.MAIN
    out += ["## Per-band conditions", "",
            f"{arms[main][0]} was chosen after the planned arm "
            f"({arms[multi_condition.PLANNED][0]}) missed its targets; "
            "against each baseline, seed by seed:", ""]
    out += ["- " + stats.sentence(arms[main][0], arms[n][0], k, per[k])
            for n, per in mc["paired"].items()
            if n in multi_condition.ALL_BASELINES
            for k in ("acc_high", "leak") if k in per]
    out += [""]
  mo = r.get("molecules") or {}
  if mo.get("comparisons"):
    titles = molecules.row_titles()
    out += ["## Molecular assembly (offline proxy)", ""]
    for a, b in molecules.COMPARISONS:
      pairs = _molecule_pairs(mo, (a, b),
                              [m for m, _ in molecules.METRICS])
      if pairs:
        out.append("- " + lead(f"{titles[a]} against {titles[b]}", pairs,
                               titles[a], titles[b]) + " " + grouped(pairs)
                   + ".")
    out += [""]
  return out


def _recipe_reading(rc) -> list:
  pairs, controls = rc["paired"], rc.get("controls", {})
  noise = rc.get("noise") or []
  out = []
  for n in noise:
    p = n["paired"]
    if p["verdict"] in (stats.IDENTICAL, stats.SAME_CONFIG):
      out.append(f"- {n['arm']}: {n['reason']}; its score is {p['verdict']} "
                 "to its control's: not an effect.")
    else:
      out.append(f"- {n['arm']}: {n['reason']}; it cannot differ from its "
                 f"control in expectation, yet differs by {p['mean']:+.3g} "
                 f"on {p['n']} seed(s): a measurement of one-seed noise, not "
                 "an effect.")
  not_effects = [k for k, p in pairs.items()
                 if p["verdict"] in (stats.SAME_CONFIG, stats.IDENTICAL)
                 and k not in {n["arm"] for n in noise}]
  if not_effects:
    out.append("- Not effects (the same config, or bit-identical scores): "
               + ", ".join(f"{k} ({pairs[k]['verdict']} to "
                           f"{controls.get(k, '-')})" for k in not_effects)
               + ".")
  noise_arms = {n["arm"] for n in noise}
  confirmed = set(rc.get("confirmed_paired") or {})
  one = [(k, p) for k, p in pairs.items() if p["verdict"] == stats.ONE_SEED
         and p.get("mean") is not None and k not in noise_arms]
  if one:
    out.append("- On one seed, no verdict (arm minus its control): "
               + "; ".join(f"{k} {p['mean']:+.3g}" for k, p in one) + ".")
  resolved = [(k, p) for k, p in pairs.items()
              if p["verdict"] not in (stats.ONE_SEED, stats.SAME_CONFIG,
                                      stats.IDENTICAL) and k not in confirmed]
  out += ["- " + stats.sentence(k, controls.get(k, "its control"),
                                "classifier FD", p) for k, p in resolved]
  out.append(f"- Best single change (lowest one-seed score): "
             f"{rc['best']['arm']}.")
  for k, p in (rc.get("confirmed_paired") or {}).items():
    out.append("- " + stats.sentence(k, controls.get(k, "its control"),
                                     "classifier FD", p))
    if (p["verdict"] == stats.BETTER and "logit-normal per band" in k
        and "flow matching" not in k):
      out.append("  Each band is its own flow from noise to data, so its "
                 "local time wants the weighting flow matching's t gets; "
                 "plain logit-normal t puts its mass at the band edge.")
  for k, p in (rc.get("patches_paired") or {}).items():
    out.append("- natural_patches: " + stats.sentence(
        k, list(recipe.PATCHES)[0], "spectrum error, fine", p))
    if k.startswith("uniform (") and p["verdict"] == stats.BETTER:
      out.append("  Data-energy band times give the fine band a short window "
                 "of t, and with it few of the training examples and of the "
                 "sampling steps: its noise is not removed. Uniform band "
                 "times give it its share back.")
  for k, p in (rc.get("patches_vs_fm") or {}).items():
    if p["verdict"] != stats.ONE_SEED:
      out.append("- natural_patches: " + stats.sentence(
          k, "flow matching", "spectrum error, fine", p))
  return out + [""]


def _restore_names(key: str):
  """'K-Flow - start (psnr)' -> ('K-Flow', 'its start estimate', 'PSNR');
  None for a key of another form."""
  if " - " not in key or " (" not in key:
    return None
  names, metric = key[:-1].split(" (", 1)
  a, b = names.split(" - ", 1)
  full = {"FM": "flow matching", "start": "its start estimate"}
  return full.get(a, a), full.get(b, b), metric.upper()


def _restoration_reading(rs) -> list:
  out = []
  for d, o in _restorations(rs):
    start = o.get("estimate") or {}
    line = (f"- {d}: PSNR K-Flow {common.fmt(o['kflow']['psnr'], 4)}, flow "
            f"matching {common.fmt(o['fm']['psnr'], 4)}, "
            f"{o.get('baseline_name', 'baseline')} "
            f"{common.fmt(o['baseline']['psnr'], 4)}")
    if start.get("psnr"):
      line += (", the start estimate both flows begin from "
               f"{common.fmt(start['psnr'], 4)}")
    pairs = {k: v for k, v in (o.get("paired") or {}).items()
             if isinstance(v, dict) and "verdict" in v}
    out.append(line + ".")
    if not pairs:
      out.append("  No per-seed values in restoration.json: no verdict.")
    out += ["  - " + stats.sentence(*_restore_names(k), p)
            for k, p in pairs.items() if _restore_names(k)]
    own = pairs.get("K-Flow - start (psnr)")
    if own and own["verdict"] == stats.WORSE:
      out.append("  K-Flow's flow lowers PSNR below the estimate it starts "
                 "from: at this degradation the flow does not improve on its "
                 "own start.")
    elif own and own["verdict"] == stats.BETTER:
      out.append("  K-Flow's flow improves on the estimate it starts from.")
    out += _beats_start(o.get("arms") or {})
  return out + [""]


def _start_wins(arms: dict) -> list:
  """The restoration settings (titles) that make K-Flow's flow beat its
  own start estimate in PSNR and in classifier FD, each beyond its
  interval."""
  return [a.get("title", slug) for slug, a in arms.items()
          if all((a.get("paired") or {}).get(f"K-Flow - start ({k})", {})
                 .get("verdict") == stats.BETTER for k in ("psnr", "fd"))]


def _beats_start(arms: dict) -> list:
  """_start_wins as a reading."""
  if not arms:
    return []
  wins = _start_wins(arms)
  if wins:
    return ["  K-Flow beats its start estimate in PSNR and classifier FD, "
            "both beyond the interval, with: " + "; ".join(wins) + "."]
  return ["  No setting makes K-Flow beat its start estimate in both PSNR "
          "and classifier FD beyond the interval (per-setting verdicts in "
          "restoration.md)."]


def _adaptive_reading(ad) -> list:
  adp, out = ad["paired"], []
  for name, p in adp.get("adaptive_vs_full", {}).items():
    full = ("kflow_2" if name.startswith("adaptive_2") else "kflow_3")
    out.append("- At equal steps: " + stats.sentence(name, full,
                                                     "classifier FD", p))
  for kind, what in (("same_wall_time", "at flow matching's wall time"),
                     ("early", f"at the {ad.get('early_steps')}-step "
                               "checkpoint")):
    for name, p in adp.get(kind, {}).items():
      ref = "fm_logit" if name.endswith("_logit") else "fm"
      out.append(f"- {name} {what}: "
                 + stats.sentence(name, ref, "classifier FD", p))
  t = ad.get("step_time_s") or {}
  if t.get("fm"):
    out.append("- Training step cost, flow matching / arm (interleaved "
               "runs on this machine): " + ", ".join(
                   f"{k} {t['fm'] / v:.2f}" for k, v in t.items() if v)
               + ".")
  for name, rec in (ad.get("band_independence") or {}).items():
    for b in (rec or {}).get("bands", []):
      out.append(f"- {name}, band {b['band']}: the finer bands as fresh "
                 f"noise move the band-{b['band']} output by "
                 f"{b['ratio_noise']:.1%} of its band-{b['band']} error "
                 f"(zeros: {b['ratio_zero']:.1%}; seed 0).")
  return out + [""]


def write(scale, r, out_dir) -> str:
  """README.md, and findings.md when every result holds its paired
  comparisons (otherwise findings.md is left as it is)."""
  os.makedirs(out_dir, exist_ok=True)
  ok = has_paired(r)
  if ok:
    with open(os.path.join(out_dir, "findings.md"), "w") as fh:
      fh.write(findings(scale, r))
  else:
    print("experiments.summary: results without per-seed values (written "
          "before the paired rule): findings.md left as it is")
  with_findings = os.path.exists(os.path.join(out_dir, "findings.md"))
  path = os.path.join(out_dir, "README.md")
  with open(path, "w") as fh:
    fh.write(readme(scale, r, out_dir, with_findings))
  return path


# The result files the two pages read (run_all writes the first seven;
# the others come from scripts that run on their own).
RESULTS = ("quality", "recipe", "class_drop", "steerability", "restoration",
           "adaptive", "mnist", "half_cost", "multi_condition", "molecules")


def load(out_dir: str) -> dict:
  """{name: result dict} of the RESULTS files in out_dir."""
  r = {}
  for name in RESULTS:
    f = os.path.join(out_dir, name + ".json")
    if os.path.exists(f):
      with open(f) as fh:
        r[name] = json.load(fh)
  return r


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dir", required=True, help="where the scripts' JSONs are")
  p.add_argument("--out", default=None, help="default: --dir")
  a = p.parse_args(argv)
  r = load(a.dir)
  scale = common.Scale(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in r["quality"]["scale"].items()})
  print(write(scale, r, a.out or a.dir))


if __name__ == "__main__":
  main()
