"""Claim 2: which K-Flow recipe wins, one factor at a time.

Starting from the recipe each data set shipped with before this study
(digits: Fourier, two bands, uniform band times, uniform t;
natural_patches: Fourier, three bands, band times from data energy with
gamma 0.5), each arm changes one thing:
the number of bands, the band-time rule (uniform; data energy
E||P_s x1||^2 with gamma 0.5 and 1; displacement energy
E||P_s (x1 - x0)||^2 with gamma 0.5 and 1), the per-band loss weight
(none; target scale, L_s^2), the t sampling (uniform, logit-normal, an
equal share per band, logit-normal in each band's local time), what the
network sees and moves (band I/O: the unstarted bands hidden from its
input, its output projected onto the active bands), overlap and blend, the
backbone (DiT against the band-MoE DiT), and at sampling time the step
allocation (by time share or equal per band; no retraining). Flow matching
is the reference row. The combination the study led to (band I/O with
logit-normal t per band, now the digits default) is then run on every
seed for every transform of quality's table against flow matching with
logit-normal t, its own best recipe.

    python -m experiments.recipe [--quick] [--root=DIR] [--out=DIR]
"""
from experiments import common
from experiments import quality

HIDE = ("--config.path.hide_input=True",)
PROJECT = ("--config.path.project_output=True",)
BAND_LOGIT = ("--config.loss.t_sampling=band_logit_normal",)
# The recipe the one-change arms led to (configs/digits.py's K-Flow
# default): every transform of quality's table that it is run for.
COMBINED = HIDE + PROJECT + BAND_LOGIT
COMBINED_ARMS = ("fourier", "dct", "wavelet_haar", "wavelet_db4", "pca")
# name -> overrides on top of the shipped K-Flow config of the data set.
FACTORS = {
    "bands": {"bands=1 (flow matching via the Fourier basis)": (
                  "--config.path.num_scales=1",),
              "bands=2 (digits default)": (),
              "bands=3": ("--config.path.num_scales=3",),
              "bands=4": ("--config.path.num_scales=4",)},
    "band times": {
        "data gamma=0.5": ("--config.path.gamma=0.5",),
        "data gamma=1": ("--config.path.gamma=1.0",),
        "displacement gamma=0.5": ("--config.path.gamma=0.5",
                                   "--config.path.energy=displacement")},
    "loss weight": {"target scale": (
        "--config.loss.band_weighting=target_scale",)},
    "t sampling": {
        "logit-normal": ("--config.loss.t_sampling=logit_normal",),
        "equal per band": ("--config.loss.t_sampling=band",
                           "--config.loss.band_weights=(1.0,1.0)"),
        "logit-normal per band": BAND_LOGIT},
    "band I/O": {"hide input": HIDE, "project output": PROJECT,
                 "hide input + project output": HIDE + PROJECT},
    "windows": {"overlap=0.1": ("--config.path.overlap=0.1",),
                "blend=cosine": ("--config.path.blend=cosine",)},
    "backbone": {
        "DiT-ti/2": ("--config.model.name=dit", "--config.model.size=ti"),
        "band-MoE DiT-ti/2": ("--config.model.name=moe_dit",
                              "--config.model.size=ti")},
}
# Changes that mean the same for flow matching: when one of them is the
# best single change, flow matching gets it too (a gain from, say, the t
# sampling alone is not a gain of K-Flow's).
LOGIT = ("--config.loss.t_sampling=logit_normal",)
# name -> (run name, overrides). With one band, logit-normal t per band is
# logit-normal t itself: one run serves both.
FM_CONTROLS = {"logit-normal": ("digits_fm_logit_normal", LOGIT),
               "logit-normal per band": ("digits_fm_logit_normal", LOGIT)}
# Runs another script trains too (same config, same name: trained once).
RUN_NAMES = {("--config.path.num_scales=1",): "digits_fm_fourier_1band"}
# The DiT arms' flow-matching reference (the U-Net one is quality's fm).
DIT_FM = ("--config.model.name=dit", "--config.model.size=ti")
# natural_patches: the questions the shipped recipe raised (its finest band
# gets about 4 % of t under data energy).
PATCHES = {
    "data gamma=0.5 (the default until this study)": (),
    "uniform (the default until band I/O)": ("--config.path.gamma=0.0",),
    "displacement gamma=0.5": ("--config.path.energy=displacement",),
    "target scale": ("--config.loss.band_weighting=target_scale",),
    "uniform + hide input + project output (the default now)": (
        "--config.path.gamma=0.0", *HIDE, *PROJECT),
}
# Arms run on every seed: the earlier default, the rules that replaced it.
PATCHES_ALL_SEEDS = [k for k in PATCHES if "default" in k]


def _arm(root, scale, data, name, config, overrides, budgets, clf, metric,
         sample=None, tag="main", seeds=None):
  evs = []
  for seed in seeds or scale.ablation_seeds:
    run = common.attempt(common.train, root, scale, name, config, overrides,
                         seed, budgets)
    ev = run and common.attempt(common.evaluate, run, scale, max(budgets),
                                tag, classifier=clf, sample=sample)
    if ev:
      evs.append(ev)
  del data
  return common.mean_std([e.get(metric) for e in evs])


def _versus(arm, ref, name) -> str:
  """Judged by the reference's seed spread (an ablation arm may have one
  seed; the references have all of them)."""
  if arm["mean"] is None or ref["mean"] is None or ref["n"] < 2:
    return f"Against {name}: undecided (one seed, no spread to judge by)."
  if arm["mean"] < ref["mean"] - ref["std"]:
    return f"It beats {name} by more than {name}'s seed spread."
  if arm["mean"] > ref["mean"] + ref["std"]:
    return f"It is worse than {name} by more than its seed spread."
  return f"It is within {name}'s seed spread."


def _slug(text):
  return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def run(scale, root, out_dir) -> dict:
  clf = common.classifier(root, scale)
  b = scale.digits_budgets
  base_cfg = quality.DIGITS["fourier"][0]
  metric = "classifier_fd"
  rows, arm_rows = {}, {}
  factors = list(FACTORS.items())
  if not scale.all_arms:
    # Toy size: one arm that exercises the new command-line options.
    factors = [("band times", {"displacement gamma=0.5": FACTORS[
        "band times"]["displacement gamma=0.5"] + (
            "--config.loss.band_weighting=target_scale",)})]
  # The one-change arms first: the references below are quality's runs,
  # which a concurrent `experiments.quality` may still be training.
  for factor, arms_ in factors:
    for name, overrides in arms_.items():
      run_name = ("digits_fourier" if not overrides else
                  RUN_NAMES.get(overrides, "digits_recipe_" + _slug(name)))
      arm_rows[(factor, name)] = _arm(root, scale, "digits", run_name,
                                      base_cfg, overrides, b, clf, metric)
      if factor == "band times":
        # Uneven band times also move the sampler's steps; the same model
        # with every band given the same number of steps tells the two
        # effects apart (no retraining).
        arm_rows[(factor, name + " + equal steps per band")] = _arm(
            root, scale, "digits", run_name, base_cfg, overrides, b, clf,
            metric, sample=dict(step_allocation="band"), tag="bandsteps")
    if factor == "backbone" and scale.all_arms:
      arm_rows[(factor, "flow matching DiT-ti/2")] = _arm(
          root, scale, "digits", "digits_fm_dit", quality.DIGITS["fm"][0],
          DIT_FM, b, clf, metric)
  # The references over every seed of the quality runs (reused): their
  # spread is the yardstick of the one-change arms.
  rows[("reference", "flow matching (U-Net)")] = _arm(
      root, scale, "digits", "digits_fm", quality.DIGITS["fm"][0], (), b,
      clf, metric, seeds=scale.seeds)
  rows[("reference", "shipped K-Flow (fourier, 2 bands)")] = _arm(
      root, scale, "digits", "digits_fourier", base_cfg, (), b, clf, metric,
      seeds=scale.seeds)
  rows[("sampling", "equal steps per band")] = _arm(
      root, scale, "digits", "digits_fourier", base_cfg, (), b, clf, metric,
      sample=dict(step_allocation="band"), tag="bandsteps")
  if scale.all_arms:
    # Projecting the velocity onto the flowing band removes what a
    # full-resolution network leaks into the other bands (what the
    # scale-adaptive network cannot do by construction).
    rows[("sampling", "band projection of the velocity")] = _arm(
        root, scale, "digits", "digits_fourier", base_cfg, (), b, clf,
        metric, sample=dict(project=True), tag="project", seeds=scale.seeds)
  rows.update(arm_rows)
  # K-Flow recipes only: the one-band arm is flow matching itself.
  ranked = sorted(((k, v) for k, v in rows.items() if v["mean"] is not None
                   and k[0] != "reference" and "flow matching" not in k[1]),
                  key=lambda kv: kv[1]["mean"])
  shipped = rows[("reference", "shipped K-Flow (fourier, 2 bands)")]
  fm = rows[("reference", "flow matching (U-Net)")]
  best_key, best = ranked[0] if ranked else (("-", "none scored yet"),
                                             common.mean_std([]))
  confirm = []
  if scale.all_arms and best_key[1] in FACTORS.get(best_key[0], {}):
    # One seed picks the winner; every seed (and flow matching given the
    # same change, where it applies) says whether it is one.
    overrides = FACTORS[best_key[0]][best_key[1]]
    run_name = RUN_NAMES.get(overrides, "digits_recipe_" + _slug(best_key[1]))
    best = _arm(root, scale, "digits", run_name, base_cfg, overrides, b, clf,
                metric, seeds=scale.seeds)
    rows[("confirmed", f"{best_key[1]} ({len(scale.seeds)} seeds)")] = best
    if best_key[1] in FM_CONTROLS:
      fm_name, fm_overrides = FM_CONTROLS[best_key[1]]
      fm_best = _arm(root, scale, "digits", fm_name, quality.DIGITS["fm"][0],
                     fm_overrides, b, clf, metric, seeds=scale.seeds)
      rows[("confirmed", f"flow matching + {best_key[1]} "
                         f"({len(scale.seeds)} seeds)")] = fm_best
      confirm.append(
          f"Flow matching given the same change: {common.fmt(fm_best)} "
          f"against its own {common.fmt(fm)}; K-Flow with it against flow "
          "matching with it: "
          + {"lower": "better beyond the spread.",
             "higher": "worse beyond the spread.",
             "within": "within the spread.",
             "undecided": "undecided (no spread)."
             }[common.compare(best, fm_best)])
  patches = {}
  pb = scale.patches_budgets
  pmetric = "spectrum_error_fine"
  # Every seed (quality's runs, reused): the yardstick of the defaults.
  patches["flow matching"] = _arm(root, scale, "patches", "patches_fm",
                                  quality.PATCHES["fm"][0], (), pb, "",
                                  pmetric, seeds=scale.seeds)
  p_arms = PATCHES if scale.all_arms else dict(list(PATCHES.items())[:1])
  for name, overrides in p_arms.items():
    # Run names from the arm's name without its note in brackets.
    run_name = "patches_fourier" if not overrides else (
        "patches_recipe_" + _slug(name.split(" (")[0]))
    # The earlier defaults have every seed (the first: quality's runs), and
    # so has the recipe that replaced them.
    patches[name] = _arm(root, scale, "patches", run_name,
                         quality.PATCHES["fourier"][0],
                         quality.PATCHES_GAMMA + overrides, pb, "",
                         pmetric, seeds=(scale.seeds if name in
                                         PATCHES_ALL_SEEDS else None))
  patches["data gamma=0.5 + equal steps per band"] = _arm(
      root, scale, "patches", "patches_fourier", quality.PATCHES["fourier"][0],
      quality.PATCHES_GAMMA, pb, "", pmetric,
      sample=dict(step_allocation="band"),
      tag="bandsteps")

  combined, combined_lines = {}, []
  if scale.all_arms:
    fm_name, fm_overrides = FM_CONTROLS["logit-normal"]
    fm_logit = _arm(root, scale, "digits", fm_name, quality.DIGITS["fm"][0],
                    fm_overrides, b, clf, metric, seeds=scale.seeds)
    combined["flow matching + logit-normal"] = fm_logit
    for arm in COMBINED_ARMS:
      config, overrides = quality.DIGITS[arm]
      combined[f"K-Flow {arm}, band I/O + logit-normal per band"] = v = _arm(
          root, scale, "digits", f"digits_{arm}_bandio", config,
          overrides + COMBINED, b, clf, metric, seeds=scale.seeds)
      combined_lines.append(
          f"- {arm}: {common.fmt(v)} against flow matching's "
          f"{common.fmt(fm_logit)}: "
          + {"lower": "better beyond the spread.",
             "higher": "worse beyond the spread.",
             "within": "within the spread.",
             "undecided": "undecided (no spread)."
             }[common.compare(v, fm_logit)])
  md = [
      "# Claim 2: the recipe",
      "",
      f"digits, K-Flow Fourier, {max(b)} steps, "
      f"{len(scale.ablation_seeds)} seed(s) per arm, classifier FD of "
      f"{scale.num_samples} samples (Euler {scale.num_steps} steps; lower "
      "is better). Each arm changes one factor of the shipped recipe. "
      "Produced by `python -m experiments.recipe` "
      "(`experiments/recipe.py`).",
      "",
      common.table(["factor", "arm", metric],
                   [[f, n, common.fmt(v)] for (f, n), v in rows.items()]),
      "",
      f"Best single change: **{best_key[0]}: {best_key[1]}** with "
      f"{common.fmt(best)} against the shipped recipe's "
      f"{common.fmt(shipped)} and flow matching's {common.fmt(fm)} "
      f"(references over {len(scale.seeds)} seeds); "
      + _versus(best, shipped, "the shipped recipe") + " "
      + _versus(best, fm, "flow matching"),
      "",
      *confirm,
      "",
      *([f"## The combined recipe ({len(scale.seeds)} seeds, {max(b)} "
         "steps)",
         "",
         "Band I/O (`config.path.hide_input=True`, "
         "`config.path.project_output=True`) with logit-normal t in each "
         "band's local time (`config.loss.t_sampling=band_logit_normal`): "
         "the default of `configs/digits.py` for every K-Flow transform "
         "since this study. Flow matching with logit-normal t, its own best "
         "recipe, is the yardstick.",
         "",
         common.table(["arm", metric],
                      [[n, common.fmt(v)] for n, v in combined.items()]),
         "",
         *combined_lines,
         ""] if combined else []),
      f"## natural_patches ({max(pb)} steps; spectrum error in the finest "
      "third of frequencies, lower is better)",
      "",
      common.table(["arm", pmetric],
                   [[n, common.fmt(v)] for n, v in patches.items()]),
  ]
  data = {"scale": scale._asdict(),
          "digits": {f"{f}: {n}": v for (f, n), v in rows.items()},
          "patches": patches, "combined": combined,
          "best": {"arm": f"{best_key[0]}: {best_key[1]}", **best},
          "shipped": shipped, "fm": fm}
  common.write_result(out_dir, "recipe", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
