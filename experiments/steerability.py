"""Claim 4: fixing the noise of some bands fixes the content at those
scales.

--mode=mix draws a grid whose rows share the coarse band's noise and whose
columns share the fine band's noise; the per-band Pearson correlation of
the outputs within a row, across rows, within a column and across columns
says how much each band's content follows its own noise. The same
protocol runs on plain flow matching through the same Fourier transform
with one band (exactly flow matching: the transform is orthonormal), its
noise split by the K-Flow run's band cut-offs
(`--config.restore.mix_cutoffs`). Both with the recipe they were first
run with (uniform t, no band I/O) and with each method's best recipe of
docs/results/recipe.md.

    python -m experiments.steerability [--quick] [--root=DIR] [--out=DIR]
"""
from experiments import common
from experiments import recipe

ONE_BAND = ("--config.path.num_scales=1",)
# name -> (run name, config, overrides); K-Flow and flow matching in pairs.
ARMS = {
    "kflow_fourier": ("digits_fourier", "configs/digits.py:transform=fourier",
                      ()),
    "fm_fourier_1band": ("digits_fm_fourier_1band",
                         "configs/digits.py:transform=fourier", ONE_BAND),
    "kflow_fourier_bandio": ("digits_fourier_bandio",
                             "configs/digits.py:transform=fourier",
                             recipe.COMBINED),
    "fm_fourier_1band_logit_normal": (
        "digits_fm_fourier_1band_logit_normal",
        "configs/digits.py:transform=fourier", ONE_BAND + recipe.LOGIT),
}
PAIRS = (("kflow_fourier", "fm_fourier_1band", "Recipe first run"),
         ("kflow_fourier_bandio", "fm_fourier_1band_logit_normal",
          "Best recipes"))
CUTOFFS = "(0.0,0.5,1.0)"  # digits' two even Fourier bands


def run(scale, root, out_dir) -> dict:
  b = scale.digits_budgets
  out, figs = {}, {}
  for name, (run_name, config, overrides) in ARMS.items():
    recs = []
    for seed in scale.seeds[:2]:  # two: a spread at half the cost
      r = common.attempt(common.train, root, scale, run_name, config,
                         overrides, seed, b)
      res = r and common.attempt(common.steer, r, scale, max(b), "mix",
                                 "split1", dict(rows=scale.mix_size,
                                                cols=scale.mix_size,
                                                split_band=1,
                                                mix_cutoffs=CUTOFFS))
      if not res:
        continue
      recs.append(res)
      if seed == scale.seeds[0]:
        figs[name] = common.copy_figure(res["png"], out_dir,
                                        f"steer_{name}.png")
    out[name] = {}
    for band in ("band_0", "band_1"):
      for k in ("same_row", "other_row", "same_col", "other_col"):
        out[name][f"{band}_{k}"] = common.mean_std(
            [r["correlations"][band][k] for r in recs])
  rows = []
  for band, share, other in (("band_0", "same_row", "other_row"),
                             ("band_1", "same_col", "other_col")):
    for name in ARMS:
      rows.append([name, band, common.fmt(out[name][f"{band}_{share}"]),
                   common.fmt(out[name][f"{band}_{other}"])])
  def gap(n, band, a, c):
    x, y = out[n][f"{band}_{a}"]["mean"], out[n][f"{band}_{c}"]["mean"]
    return float("nan") if x is None or y is None else x - y
  md = [
      "# Claim 4: steerability by scale",
      "",
      f"digits, {max(b)} steps, {len(scale.seeds[:2])} seed(s), "
      f"{scale.mix_size}x{scale.mix_size} grids: rows share the noise of "
      "band 0 (coarse), columns the noise of band 1 (fine). Band 0 should "
      "correlate within a row (shared noise) far more than across rows; "
      "band 1 likewise within a column. Produced by "
      "`python -m experiments.steerability`.",
      "",
      common.table(["arm", "band", "correlation, shared noise",
                    "correlation, other noise"], rows),
      "",
      "| | K-Flow | flow matching |",
      "|---|---|---|",
      *[f"| {label} | ![kflow]({figs.get(k, '')}) | "
        f"![fm]({figs.get(f, '')}) |" for k, f, label in PAIRS],
      "",
      *[f"{label}: coarse-band gap (same row - other row): K-Flow "
        f"{gap(k, 'band_0', 'same_row', 'other_row'):.3f}, flow matching "
        f"{gap(f, 'band_0', 'same_row', 'other_row'):.3f}; fine-band gap "
        f"(same column - other column): K-Flow "
        f"{gap(k, 'band_1', 'same_col', 'other_col'):.3f}, flow matching "
        f"{gap(f, 'band_1', 'same_col', 'other_col'):.3f}." + "\n"
        for k, f, label in PAIRS],
  ]
  data = {"scale": scale._asdict(), **out}
  common.write_result(out_dir, "steerability", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
