"""Claim 5: restoration without training.

K-Flow (`--mode=restore`) keeps the bands the observation determines,
starts the flow where they end and keeps the result consistent with the
observation. Flow matching runs the same consistency step, started
SDEdit-style at the same t from the same estimate
(`--config.restore.t_start`), and bicubic up-sampling is the classical
answer for low resolution. PSNR (dB) and SSIM against the originals of
held-out digits; mean over images, then mean ± std over seeds. Each
method with its best recipe of docs/results/recipe.md, and both with the
recipe they were first run with.

    python -m experiments.restoration [--quick] [--root=DIR] [--out=DIR]
"""
from experiments import common
from experiments import quality
from experiments import recipe

DEGRADATIONS = ("lowres:2", "lowres:4", "blur:1.0")
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
                    "band I/O)"}


def _restore(root, scale, arms, degradations, out_dir, figures):
  """{degradation: {kflow, fm, baseline: psnr / ssim mean_std, t_start}}
  and the first seed's pictures (when `figures`)."""
  b = scale.digits_budgets
  (kf_name, kf_cfg, kf_over), (fm_name, fm_cfg, fm_over) = arms
  out, figs = {}, {}
  for deg in degradations:
    recs = {"kflow": [], "fm": [], "baseline": []}
    t_start = []
    for seed in scale.seeds:
      kf = common.attempt(common.train, root, scale, kf_name, kf_cfg,
                          kf_over, seed, b)
      fm = common.attempt(common.train, root, scale, fm_name, fm_cfg,
                          fm_over, seed, b)
      opts = dict(degradation=deg, num_images=scale.restore_images,
                  batch_size=scale.restore_images)
      # Heun: restoration runs a consistency step between solver steps.
      solver = dict(solver="heun", num_steps=max(2, scale.num_steps // 2))
      res_k = kf and common.attempt(common.steer, kf, scale, max(b),
                                    "restore", deg, opts, solver)
      t = res_k and float(res_k["t_start"])
      res_f = res_k and fm and common.attempt(
          common.steer, fm, scale, max(b), "restore", f"{deg}_t{t:g}",
          dict(opts, t_start=t), solver)
      if not (res_k and res_f):
        continue
      t_start.append(t)
      recs["kflow"].append(res_k["mean"]["restored"])
      recs["fm"].append(res_f["mean"]["restored"])
      base = "bicubic" if "bicubic" in res_k["mean"] else "input"
      recs["baseline"].append(dict(res_k["mean"][base], name=base))
      if figures and seed == scale.seeds[0]:
        slug = deg.replace(":", "").replace(".", "p")
        figs[deg] = (common.copy_figure(res_k["png"], out_dir,
                                        f"restore_{slug}_kflow.png"),
                     common.copy_figure(res_f["png"], out_dir,
                                        f"restore_{slug}_fm.png"))
    out[deg] = {arm: {k: common.mean_std([r[k] for r in v])
                      for k in ("psnr", "ssim")} for arm, v in recs.items()}
    out[deg]["baseline_name"] = (recs["baseline"][0]["name"]
                                 if recs["baseline"] else "-")
    out[deg]["t_start"] = t_start
  return out, figs


def _table(out, degradations):
  rows = []
  for deg in degradations:
    o = out[deg]
    rows.append([deg, f"{o['t_start'][0]:g}" if o["t_start"] else "-",
                 common.fmt(o["kflow"]["psnr"], 4),
                 common.fmt(o["fm"]["psnr"], 4),
                 f"{common.fmt(o['baseline']['psnr'], 4)} "
                 f"({o['baseline_name']})",
                 common.fmt(o["kflow"]["ssim"]), common.fmt(o["fm"]["ssim"]),
                 common.fmt(o["baseline"]["ssim"])])
  return common.table(["degradation", "t start", "PSNR K-Flow", "PSNR FM",
                       "PSNR baseline", "SSIM K-Flow", "SSIM FM",
                       "SSIM baseline"], rows)


def run(scale, root, out_dir) -> dict:
  b = scale.digits_budgets
  degradations = DEGRADATIONS if scale.all_arms else DEGRADATIONS[:1]
  recipes = RECIPES if scale.all_arms else dict(list(RECIPES.items())[:1])
  results, figs = {}, {}
  for name, arms in recipes.items():
    results[name], f = _restore(root, scale, arms, degradations, out_dir,
                                figures=name == "best")
    figs.update(f)
  md = [
      "# Claim 5: training-free restoration",
      "",
      f"digits (16x16), unconditional models of {max(b)} steps "
      f"({len(scale.seeds)} seed(s)), {scale.restore_images} held-out "
      "images per seed, Heun. `t start`: where K-Flow starts (the end of "
      "the bands the observation determines); flow matching starts there "
      "too. Baseline: bicubic up-sampling for low resolution, the degraded "
      "input itself for blur. Produced by `python -m "
      "experiments.restoration`.",
      "",
  ]
  for name in recipes:
    md += [f"## {TITLES[name]}", "", _table(results[name], degradations),
           ""]
  md += ["Columns of each picture (best recipes): input, restored, "
         "baseline (low resolution), original.", ""]
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
