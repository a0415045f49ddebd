"""Claim 5: restoration without training.

K-Flow (`--mode=restore`) keeps the bands the observation determines,
starts the flow where they end and keeps the result consistent with the
observation. Flow matching runs the same consistency step, started
SDEdit-style at the same t from the same estimate
(`--config.restore.t_start`). Both start from the operator's estimate
(bicubic made consistent with y for low resolution, Wiener deconvolution
for blur, y itself for noise): the strongest simple baseline, reported
beside bicubic / the input. Each degradation runs several arms
(`ARMS`: the default one-draw flow, steps on the predicted image with
re-noising, every band generated, the mean of 8 draws; for noise
`NOISE_ARMS`: a Wiener start and a start that counts y's noise as the
path's). PSNR (dB), SSIM and, with the
digits classifier, the classifier FD of the restored set to the originals
(a restoration can gain PSNR by blurring) against the originals of
held-out digits; mean over images, then mean ± std over seeds, and paired
differences seed by seed (experiments/stats.py). Each method with its best
recipe of docs/results/recipe.md, and both with the recipe they were first
run with (default arm only).

    python -m experiments.restoration [--quick] [--root=DIR] [--out=DIR]
"""

from experiments import common
from experiments import quality
from experiments import recipe
from experiments import stats

DEGRADATIONS = ("lowres:2", "lowres:4", "blur:1.0", "noise:0.2")
# name -> ((K-Flow run, config, overrides), (flow-matching run, ...)): each
# method's best recipe (docs/results/recipe.md; the first, judged and
# pictured) and the recipe both were first run with.
RECIPES = {
    "best": (("digits_fourier_bandio", quality.DIGITS["fourier"][0],
              recipe.COMBINED),
             recipe.FM_CONTROLS["logit-normal"][:1]
             + (quality.DIGITS["fm"][0], recipe.LOGIT)),
    "before": (("digits_fourier",) + quality.DIGITS["fourier"],
               ("digits_fm",) + quality.DIGITS["fm"]),
}
TITLES = {"best": "Each method's best recipe (K-Flow: band I/O, logit-normal "
                  "t per band; flow matching: logit-normal t)",
          "before": "The recipe both were first run with (uniform t, no "
                    "band I/O; default arm)"}
# Arms: (slug, title, config.restore options, sampler, own start). sampler
# "heun": Heun at half the NFE budget's steps (the consistency step runs
# between steps); "predict": one field call per step at the full budget
# (equal NFE). own start: each method starts at its own t (matched noise)
# instead of flow matching at K-Flow's. The exploration behind the choice
# (one seed, docs/method.md#restoration): renoise 1 beat 0.5 and 0 for
# both methods on lowres and blur; at lowres:4 every arm started after
# K-Flow's kept band 0 ends at the start estimate, so the "every band" arms
# generate all bands (K-Flow keep_bands=-1, flow matching t=0); on noise
# (no consistency step with y itself as the estimate) re-noising forgets
# the observation and keeping no band ignores it, so noise gets its own.
ODE = ("one", "one draw (Heun, consistency on the path)", {}, "heun", False)
PREDICT = dict(sampler="predict", renoise=1.0)
ARMS = (
    ODE,
    ("pred", "one draw (steps on the predicted image, renoise 1)", PREDICT,
     "predict", False),
    ("all", "every band generated, one draw (predict, renoise 1)",
     dict(PREDICT, keep_bands=-1), "predict", False),
    ("all8", "every band generated, mean of 8 draws (predict, renoise 1)",
     dict(PREDICT, keep_bands=-1, num_draws=8), "predict", False),
)
NOISE_ARMS = (
    ODE,
    ("wiener", "Wiener start (one draw, Heun)", dict(estimate="wiener"),
     "heun", False),
    ("matched", "y's noise as the path's (one draw, Heun, own t)",
     dict(match_noise=True), "heun", True),
    ("matched8", "y's noise as the path's, mean of 8 draws (Heun, own t)",
     dict(match_noise=True, num_draws=8), "heun", True),
)
METRICS = (("psnr", False), ("ssim", False), ("fd", True))


def _arms(scale, deg):
  arms = NOISE_ARMS if deg.startswith("noise:") else ARMS
  return arms if scale.all_arms else arms[:2]


def _score(res, column):
  """{psnr, ssim, fd, accuracy} of one column of a restore JSON."""
  out = dict(res["mean"][column])
  clf = (res.get("classifier") or {}).get(column) or {}
  out["fd"], out["accuracy"] = clf.get("fd"), clf.get("accuracy")
  return out


def _summarise(per_seed):
  """mean_std and paired differences of per-seed scores."""
  out = {who: {k: common.mean_std(v) for k, v in rec.items()}
         for who, rec in per_seed.items()}
  paired = {}
  for who, name in (("kflow", "K-Flow - start"), ("fm", "FM - start")):
    for k, lower in METRICS:
      paired[f"{name} ({k})"] = stats.paired(
          per_seed[who][k], per_seed["estimate"][k], lower_is_better=lower)
  paired["K-Flow - FM (psnr)"] = stats.paired(
      per_seed["kflow"]["psnr"], per_seed["fm"]["psnr"],
      lower_is_better=False)
  out["paired"] = paired
  return out


def _restore(root, scale, arms_, degradations, out_dir, figures, clf):
  """{degradation: headline arm's kflow / fm / estimate / baseline
  (mean_std), t_start, paired, per_seed, and every arm under "arms"} and
  the first seed's pictures (when `figures`)."""
  b = scale.digits_budgets
  (kf_name, kf_cfg, kf_over), (fm_name, fm_cfg, fm_over) = arms_
  out, figs = {}, {}
  for deg in degradations:
    arms = _arms(scale, deg) if figures else (ODE,)
    per = {a[0]: {w: {k: [] for k in ("psnr", "ssim", "fd", "accuracy")}
                  for w in ("kflow", "fm", "estimate", "baseline")}
           for a in arms}
    t_start, base_name = {a[0]: [] for a in arms}, "-"
    t_fm = {a[0]: [] for a in arms}
    for seed in scale.seeds:
      kf = common.attempt(common.train, root, scale, kf_name, kf_cfg,
                          kf_over, seed, b)
      fm = common.attempt(common.train, root, scale, fm_name, fm_cfg,
                          fm_over, seed, b)
      # The classifier that scores every restored column.
      judge = (f"--config.evals.classifier={clf}",) if clf else ()
      for slug, _, ropts, solver, own_start in arms:
        opts = dict(degradation=deg, num_images=scale.restore_images,
                    batch_size=scale.restore_images, **ropts)
        # Heun: restoration runs a consistency step between solver steps;
        # predict: one field call per step, at Heun's NFE.
        sample = (dict(solver="heun", num_steps=max(2, scale.num_steps // 2))
                  if solver == "heun" else dict(num_steps=scale.num_steps))
        res_k = kf and common.attempt(common.steer, kf, scale, max(b),
                                      "restore", f"{deg}_{slug}", opts,
                                      sample, judge)
        t = res_k and float(res_k["t_start"])
        # Flow matching (one band) starts at K-Flow's t, or its own.
        fm_opts = {k: v for k, v in opts.items() if k != "keep_bands"}
        if not own_start:
          fm_opts["t_start"] = t
        res_f = res_k and fm and common.attempt(
            common.steer, fm, scale, max(b), "restore",
            f"{deg}_{slug}" + ("" if own_start else f"_t{t:g}"), fm_opts,
            sample, judge)
        if not (res_k and res_f):
          for rec in per[slug].values():
            for v in rec.values():
              v.append(None)
          continue
        t_start[slug].append(t)
        t_fm[slug].append(float(res_f["t_start"]))
        base_name = "bicubic" if "bicubic" in res_k["mean"] else "input"
        for who, res, col in (("kflow", res_k, "restored"),
                              ("fm", res_f, "restored"),
                              ("estimate", res_k, "estimate"),
                              ("baseline", res_k, base_name)):
          for k, v in _score(res, col).items():
            per[slug][who][k].append(v)
        if figures and slug == ODE[0] and seed == scale.seeds[0]:
          name = deg.replace(":", "").replace(".", "p")
          figs[deg] = (common.copy_figure(res_k["png"], out_dir,
                                          f"restore_{name}_kflow.png"),
                       common.copy_figure(res_f["png"], out_dir,
                                          f"restore_{name}_fm.png"))
    arms_out = {}
    for slug, title, *_ in arms:
      arms_out[slug] = dict(_summarise(per[slug]), title=title,
                            t_start=t_start[slug], t_start_fm=t_fm[slug],
                            per_seed=per[slug])
    # The default arm at the top level (what the summary reads).
    out[deg] = dict(arms_out[ODE[0]], baseline_name=base_name,
                    arms=arms_out)
  return out, figs


def _table(out, degradations):
  rows = []
  for deg in degradations:
    for slug, a in out[deg]["arms"].items():
      ts = sorted(set(f"{t:.3g}" for t in a["t_start"]))
      tf = sorted(set(f"{t:.3g}" for t in a.get("t_start_fm", [])))
      rows.append([
          deg, a["title"], "/".join(ts) + (
              f" (FM {'/'.join(tf)})" if tf and tf != ts else "") or "-",
          common.fmt(a["kflow"]["psnr"], 4), common.fmt(a["fm"]["psnr"], 4),
          common.fmt(a["estimate"]["psnr"], 4),
          f"{common.fmt(a['baseline']['psnr'], 4)} "
          f"({out[deg]['baseline_name']})",
          common.fmt(a["kflow"]["ssim"]), common.fmt(a["fm"]["ssim"]),
          common.fmt(a["estimate"]["ssim"]),
          common.fmt(a["kflow"]["fd"]), common.fmt(a["fm"]["fd"]),
          common.fmt(a["estimate"]["fd"])])
  return common.table(
      ["degradation", "arm", "t start", "PSNR K-Flow", "PSNR FM",
       "PSNR start estimate", "PSNR baseline", "SSIM K-Flow", "SSIM FM",
       "SSIM start estimate", "FD K-Flow", "FD FM", "FD start estimate"],
      rows)


def _paired_table(out, degradations):
  rows = []
  for deg in degradations:
    for slug, a in out[deg]["arms"].items():
      p = a["paired"]
      rows.append([deg, a["title"]] + [
          stats.fmt(p[f"{who} - start ({k})"])
          for who in ("K-Flow", "FM") for k in ("psnr", "fd")])
  return common.table(
      ["degradation", "arm", "K-Flow - start, PSNR",
       "K-Flow - start, FD", "FM - start, PSNR", "FM - start, FD"], rows)


def run(scale, root, out_dir) -> dict:
  b = scale.digits_budgets
  degradations = DEGRADATIONS if scale.all_arms else DEGRADATIONS[:1]
  recipes = RECIPES if scale.all_arms else dict(list(RECIPES.items())[:1])
  clf = common.classifier(root, scale)
  results, figs = {}, {}
  for name, arms in recipes.items():
    results[name], f = _restore(root, scale, arms, degradations, out_dir,
                                figures=name == "best", clf=clf)
    figs.update(f)
  md = [
      "# Claim 5: training-free restoration",
      "",
      f"digits (16x16), unconditional models of {max(b)} steps "
      f"({len(scale.seeds)} seed(s)), {scale.restore_images} held-out "
      "images per seed. `t start`: where K-Flow starts (the end of the "
      "bands the observation determines); flow matching starts there too, "
      "except in the matched-noise arms, where each starts at the latest t "
      "at which y's noise fits under its path's. Start estimate: the "
      "image both flows start from (`--mode=restore`'s `estimate` "
      "column). Baseline: bicubic up-sampling for low resolution, the "
      "degraded input itself otherwise. FD: classifier Frechet distance of "
      "the restored set to the originals (64-d features of the digits "
      "classifier; with "
      f"{scale.restore_images} images a biased, noisy but paired measure). "
      "Produced by `python -m experiments.restoration`.",
      "",
  ]
  for name in recipes:
    md += [f"## {TITLES[name]}", "", _table(results[name], degradations),
           ""]
  md += ["## Against the start estimate, seed by seed", "",
         "Each flow minus its start estimate on the same images and seeds "
         "(mean, 95 % t-interval, verdict; PSNR higher and FD lower is "
         "better).", "", _paired_table(results["best"], degradations), ""]
  md += ["Columns of each picture (best recipes, one draw): input, "
         "restored, start estimate, baseline (low resolution), original.",
         ""]
  for deg, (k, f) in figs.items():
    md += [f"{deg}: K-Flow ![{deg} kflow]({k}) flow matching "
           f"![{deg} fm]({f})", ""]
  # The best recipes at the top level (what the summary reads).
  data = {"scale": scale._asdict(), **results["best"],
          **({"before": results["before"]} if "before" in results else {})}
  common.write_result(out_dir, "restoration", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
