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

Every arm is held against its control seed by seed (experiments/stats.py):
the one-change arms run on scale.ablation_seeds (one seed at full scale:
"one seed", no verdict, a lead and not an effect), the references, the
confirmed change and the combined recipe on every seed. Arms that share
a run and an evaluation are "same config"; NULL_ARMS cannot differ from
their control in expectation, so their gap is reported as one-seed noise.

    python -m experiments.recipe [--quick] [--root=DIR] [--out=DIR]
"""
from experiments import common
from experiments import quality
from experiments import stats

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


# Arms that cannot differ from their control in expectation: their gap to
# it on one seed measures one-seed noise, not an effect (and where the
# result is bit-identical, the paired rule says "identical").
NULL_ARMS = {
    ("t sampling", "equal per band"):
        "t drawn uniformly inside a band chosen with equal weights, on two "
        "bands of equal length: uniform t in distribution, as the shipped "
        "recipe draws it",
    ("loss weight", "target scale"):
        "weights L_s^2, normalised: (1, 1) on the uniform two-band path, "
        "the same loss as the shipped recipe",
}
SHIPPED = ("reference", "shipped K-Flow (fourier, 2 bands)")
FM = ("reference", "flow matching (U-Net)")


class _Arms:
  """Rows of a table: each arm's score seed by seed (aligned with
  scale.seeds; None for a seed the arm does not run) and the runs and
  evaluation behind it, so that an arm can be held against its control
  seed by seed and arms that share a run and an evaluation are "same
  config", never an effect."""

  def __init__(self, root, scale, budgets, clf, metric):
    self.root, self.scale, self.budgets = root, scale, budgets
    self.clf, self.metric = clf, metric
    self.rows, self.runs, self.controls = {}, {}, {}

  def add(self, key, name, config, overrides, sample=None, tag="main",
          seeds=None, control=None) -> dict:
    values, runs = [], []
    for seed in self.scale.seeds:
      run = (seed in (seeds or self.scale.ablation_seeds)
             and common.attempt(common.train, self.root, self.scale, name,
                                config, overrides, seed, self.budgets))
      ev = run and common.attempt(common.evaluate, run, self.scale,
                                  max(self.budgets), tag, classifier=self.clf,
                                  sample=sample)
      values.append(ev.get(self.metric) if ev else None)
      runs.append((run or None, tag))
    self.rows[key] = dict(common.mean_std(values), per_seed=values)
    self.runs[key] = runs
    if control:
      self.controls[key] = control
    return self.rows[key]

  def versus(self, key, ref) -> dict:
    """rows[key] - rows[ref] seed by seed (lower is better)."""
    pairs = [(a, b) for (a, ta), (b, tb) in zip(self.runs[key],
                                                 self.runs[ref])
             if a is not None and b is not None]
    same = bool(pairs) and all(
        common.same_run(a, b) for a, b in pairs) and all(
            ta == tb for (_, ta), (_, tb) in zip(self.runs[key],
                                                 self.runs[ref]))
    return stats.paired(self.rows[key]["per_seed"],
                        self.rows[ref]["per_seed"], lower_is_better=True,
                        same_config=same)

  def paired(self) -> dict:
    return {k: self.versus(k, c) for k, c in self.controls.items()}


def _slug(text):
  return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _label(key) -> str:
  return key if isinstance(key, str) else f"{key[0]}: {key[1]}"


def _cells(arms, key, pairs):
  c = arms.controls.get(key)
  return [common.fmt(arms.rows[key]),
          "-" if c is None else _label(c)[:60],
          "-" if c is None else stats.fmt(pairs[key])]


def noise_yardstick(rows, pairs) -> list:
  """[(arm, reason, paired)] of the arms that cannot differ from their
  control in expectation (NULL_ARMS), as scored."""
  return [(_label(k), reason, pairs[k]) for k, reason in NULL_ARMS.items()
          if k in pairs and pairs[k].get("mean") is not None]


def run(scale, root, out_dir) -> dict:
  clf = common.classifier(root, scale)
  b = scale.digits_budgets
  base_cfg = quality.DIGITS["fourier"][0]
  metric = "classifier_fd"
  digits = _Arms(root, scale, b, clf, metric)
  factors = list(FACTORS.items())
  if not scale.all_arms:
    # Toy size: one arm that exercises the new command-line options.
    factors = [("band times", {"displacement gamma=0.5": FACTORS[
        "band times"]["displacement gamma=0.5"] + (
            "--config.loss.band_weighting=target_scale",)})]
  # The one-change arms first: the references below are quality's runs,
  # which a concurrent `experiments.quality` may still be training.
  arm_keys = []
  for factor, arms_ in factors:
    for name, overrides in arms_.items():
      run_name = ("digits_fourier" if not overrides else
                  RUN_NAMES.get(overrides, "digits_recipe_" + _slug(name)))
      digits.add((factor, name), run_name, base_cfg, overrides,
                 control=(FM if overrides in RUN_NAMES else SHIPPED))
      arm_keys.append((factor, name))
      if factor == "band times":
        # Uneven band times also move the sampler's steps; the same model
        # with every band given the same number of steps tells the two
        # effects apart (no retraining): held against the same model.
        key = (factor, name + " + equal steps per band")
        digits.add(key, run_name, base_cfg, overrides,
                   sample=dict(step_allocation="band"), tag="bandsteps",
                   control=(factor, name))
        arm_keys.append(key)
    if factor == "backbone" and scale.all_arms:
      key = (factor, "flow matching DiT-ti/2")
      digits.add(key, "digits_fm_dit", quality.DIGITS["fm"][0], DIT_FM,
                 control=FM)
      arm_keys.append(key)
  # The references over every seed of the quality runs (reused).
  digits.add(FM, "digits_fm", quality.DIGITS["fm"][0], (), seeds=scale.seeds)
  digits.add(SHIPPED, "digits_fourier", base_cfg, (), seeds=scale.seeds,
             control=FM)
  digits.add(("sampling", "equal steps per band"), "digits_fourier",
             base_cfg, (), sample=dict(step_allocation="band"),
             tag="bandsteps", control=SHIPPED)
  if scale.all_arms:
    # Projecting the velocity onto the flowing band removes what a
    # full-resolution network leaks into the other bands (what the
    # scale-adaptive network cannot do by construction).
    digits.add(("sampling", "band projection of the velocity"),
               "digits_fourier", base_cfg, (), sample=dict(project=True),
               tag="project", seeds=scale.seeds, control=SHIPPED)
  # Table order: references, sampling, then the one-change arms.
  order = [FM, SHIPPED] + [k for k in digits.rows if k[0] == "sampling"]
  order += arm_keys
  # K-Flow recipes only: the one-band arm is flow matching itself; an arm
  # that cannot differ from the shipped recipe is no candidate.
  ranked = sorted(((k, digits.rows[k]) for k in arm_keys
                   if digits.rows[k]["mean"] is not None
                   and "flow matching" not in k[1] and k not in NULL_ARMS
                   and digits.versus(k, SHIPPED)["verdict"] not in (
                       stats.SAME_CONFIG, stats.IDENTICAL)),
                  key=lambda kv: kv[1]["mean"])
  best_key, best = ranked[0] if ranked else (("-", "none scored yet"),
                                             common.mean_std([]))
  confirm, confirm_keys = [], []
  if scale.all_arms and best_key[1] in FACTORS.get(best_key[0], {}):
    # One seed picks the winner; every seed (and flow matching given the
    # same change, where it applies) says whether it is one.
    overrides = FACTORS[best_key[0]][best_key[1]]
    run_name = RUN_NAMES.get(overrides, "digits_recipe_" + _slug(best_key[1]))
    key = ("confirmed", f"{best_key[1]} ({len(scale.seeds)} seeds)")
    digits.add(key, run_name, base_cfg, overrides, seeds=scale.seeds,
               control=SHIPPED)
    confirm_keys.append(key)
    confirm.append("- " + stats.sentence(key[1], "the shipped recipe",
                                         metric, digits.versus(key, SHIPPED)))
    confirm.append("- " + stats.sentence(key[1], "flow matching", metric,
                                         digits.versus(key, FM)))
    if best_key[1] in FM_CONTROLS:
      fm_name, fm_overrides = FM_CONTROLS[best_key[1]]
      fm_key = ("confirmed", f"flow matching + {best_key[1]} "
                             f"({len(scale.seeds)} seeds)")
      digits.add(fm_key, fm_name, quality.DIGITS["fm"][0], fm_overrides,
                 seeds=scale.seeds, control=FM)
      confirm_keys.append(fm_key)
      confirm.append("- Flow matching given the same change: " +
                     stats.sentence(fm_key[1], "flow matching", metric,
                                    digits.versus(fm_key, FM)))
      confirm.append("- K-Flow and flow matching both with it: " +
                     stats.sentence(key[1], fm_key[1], metric,
                                    digits.versus(key, fm_key)))
  order += confirm_keys
  pairs = digits.paired()
  shipped, fm = digits.rows[SHIPPED], digits.rows[FM]
  best_vs = {"shipped": (digits.versus(best_key, SHIPPED)
                         if best_key in digits.rows else None),
             "fm": (digits.versus(best_key, FM)
                    if best_key in digits.rows else None)}
  noise = noise_yardstick(digits.rows, pairs)

  pb = scale.patches_budgets
  pmetric = "spectrum_error_fine"
  patches = _Arms(root, scale, pb, "", pmetric)
  p_fm = "flow matching"
  # Every seed (quality's runs, reused): the yardstick of the defaults.
  patches.add(p_fm, "patches_fm", quality.PATCHES["fm"][0], (),
              seeds=scale.seeds)
  p_arms = PATCHES if scale.all_arms else dict(list(PATCHES.items())[:1])
  p_default = list(PATCHES)[0]
  for name, overrides in p_arms.items():
    # Run names from the arm's name without its note in brackets.
    run_name = "patches_fourier" if not overrides else (
        "patches_recipe_" + _slug(name.split(" (")[0]))
    # The earlier defaults have every seed (the first: quality's runs), and
    # so has the recipe that replaced them.
    patches.add(name, run_name, quality.PATCHES["fourier"][0],
                quality.PATCHES_GAMMA + overrides,
                seeds=(scale.seeds if name in PATCHES_ALL_SEEDS else None),
                control=None if name == p_default else p_default)
  patches.add(f"{p_default.split(' (')[0]} + equal steps per band",
              "patches_fourier", quality.PATCHES["fourier"][0],
              quality.PATCHES_GAMMA, sample=dict(step_allocation="band"),
              tag="bandsteps", control=p_default)
  p_pairs = patches.paired()
  p_vs_fm = {n: patches.versus(n, p_fm) for n in patches.rows if n != p_fm}

  combined, combined_pairs = {}, {}
  if scale.all_arms:
    fm_name, fm_overrides = FM_CONTROLS["logit-normal"]
    comb = _Arms(root, scale, b, clf, metric)
    fm_key = "flow matching + logit-normal"
    comb.add(fm_key, fm_name, quality.DIGITS["fm"][0], fm_overrides,
             seeds=scale.seeds)
    for arm in COMBINED_ARMS:
      config, overrides = quality.DIGITS[arm]
      comb.add(f"K-Flow {arm}, band I/O + logit-normal per band",
               f"digits_{arm}_bandio", config, overrides + COMBINED,
               seeds=scale.seeds, control=fm_key)
    combined, combined_pairs = comb.rows, comb.paired()
  one = len(scale.ablation_seeds)
  md = [
      "# Claim 2: the recipe",
      "",
      f"digits, K-Flow Fourier, {max(b)} steps, {one} seed(s) per arm "
      f"(seeds {list(scale.ablation_seeds)}; the references and the "
      f"confirmed arms: {len(scale.seeds)}), classifier FD of "
      f"{scale.num_samples} samples (Euler {scale.num_steps} steps; lower "
      "is better). Each arm changes one factor of the shipped recipe and is "
      "held against its control seed by seed on the seeds both ran: the "
      "mean difference, its 95 % t interval and the verdict of "
      "`experiments/stats.py`. On one seed there is no interval and no "
      "verdict (\"one seed\"): such a difference is a lead, not an effect. "
      "Produced by `python -m experiments.recipe` (`experiments/recipe.py`).",
      "",
      common.table(["factor", "arm", metric, "control", "arm - control"],
                   [[f, n] + _cells(digits, (f, n), pairs)
                    for f, n in order]),
      "",
      *(["One-seed noise, measured by arms that cannot differ from their "
         "control in expectation:", ""]
        + [f"- **{name}** ({reason}): " + (
            f"{p['verdict']}, not an effect." if p["verdict"] in (
                stats.IDENTICAL, stats.SAME_CONFIG) else
            f"{p['mean']:+.3g} against its control on {p['n']} seed(s): "
            "noise, not an effect; one-seed differences of this size say "
            "nothing.") for name, reason, p in noise] + [""]
        if noise else []),
      f"Best single change (lowest one-seed score among the K-Flow arms): "
      f"**{best_key[0]}: {best_key[1]}** with {common.fmt(best)} against "
      f"the shipped recipe's {common.fmt(shipped)} and flow matching's "
      f"{common.fmt(fm)}. Seed by seed against the shipped recipe: "
      f"{stats.fmt(best_vs['shipped']) if best_vs['shipped'] else '-'}; "
      f"against flow matching: "
      f"{stats.fmt(best_vs['fm']) if best_vs['fm'] else '-'}.",
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
         common.table(["arm", metric, "arm - flow matching"],
                      [[n, common.fmt(v), stats.fmt(combined_pairs[n])
                        if n in combined_pairs else "-"]
                       for n, v in combined.items()]),
         "",
         *["- " + stats.sentence(n, "flow matching + logit-normal", metric,
                                 p) for n, p in combined_pairs.items()],
         ""] if combined else []),
      f"## natural_patches ({max(pb)} steps; spectrum error in the finest "
      "third of frequencies, lower is better)",
      "",
      common.table([
          "arm", pmetric, "control", "arm - control",
          "arm - flow matching"],
          [[n] + _cells(patches, n, p_pairs)
           + [stats.fmt(p_vs_fm[n]) if n in p_vs_fm else "-"]
           for n in patches.rows]),
  ]
  label = lambda d: {_label(k): v for k, v in d.items()}
  data = {"scale": scale._asdict(),
          "digits": label(digits.rows), "paired": label(pairs),
          "controls": {_label(k): _label(c)
                       for k, c in digits.controls.items()},
          "noise": [{"arm": n, "reason": r, "paired": p}
                    for n, r, p in noise],
          "patches": patches.rows, "patches_paired": p_pairs,
          "patches_vs_fm": p_vs_fm, "combined": combined,
          "combined_paired": combined_pairs,
          "best": {"arm": f"{best_key[0]}: {best_key[1]}", **best},
          "best_vs": best_vs,
          "confirmed": {_label(k): digits.rows[k] for k in confirm_keys},
          "confirmed_paired": {
              _label(k): digits.versus(k, FM if "flow matching" in k[1]
                                       else SHIPPED) for k in confirm_keys},
          "shipped": shipped, "fm": fm}
  common.write_result(out_dir, "recipe", "\n".join(md), data)
  return data


if __name__ == "__main__":
  common.main(run)
