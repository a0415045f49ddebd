"""Per-band conditions on natural patches (plan E3): a colour photo on the
coarse band and a grey texture on the fine bands.

configs/patches.py:cond / :slots (16x16 RGB crops of 4 colour photos,
classes 0-3, and 3 grey textures, classes 4-6, split by region; 3 Fourier
bands with uniform band times). A sample asked for (A, B), A a colour
photo and B a texture, is split at band 1 (evaluators/hybrid.BandSplit:
low = band 0, high = bands 1-2) and judged by evaluators/patch_judges.py:
acc_low = the low-pass part has the colours of A, acc_high = the
high-pass part is the texture B, leak = the high-pass part looks like A's
own detail; fd = FD in the judges' joint features to real hybrids
P_low x_A + P_high x_B of held-out crops, fd_ratio = fd / the same run's
FD on consistent pairs (A, A) (every photo); colour_fd = FD of the
low-pass colour features to real held-out crops of A (its split-half
real baseline beside it). Arms mirror E2's (experiments/multi_condition.py):

  slots_w    2 condition slots (configs/patches.py:slots: slot dropout, 25 %
             hybrids colour-coarse / texture-fine), guidance FINE_W on the
             texture slot in bands 1-2 (nested), CFG 1.5 elsewhere: main
  slots      the same run with CFG 1.5 everywhere
  slots_nomix  condition slots trained without hybrids (band_mix 0)
  switch     the one-label K-Flow run (configs/patches.py:cond), label A in
             band 0, B from the band edge on (config.sample.label_switch_t)
  switch_w   the same with guidance FINE_W in bands 1-2
  fm_switch  plain flow matching (Fourier, one band), the label switched at
             the same time
  fm_factorized  flow matching with the Factorized-Diffusion sum
             P_low v(A) + P_high v(B) over the K-Flow run's band 0 / bands 1-2

    python -m experiments.multi_condition_patches [--quick] [--root=DIR]
"""

import numpy as np

from experiments import common
from experiments import multi_condition as mc
from experiments import stats

COND = "configs/patches.py:cond"
SLOTS = "configs/patches.py:slots"
GUIDANCE = 1.5   # configs/patches.py:cond's CFG
# Fine-slot guidance. Not tuned on patches: E2's digits value was 10
# (fine-label accuracy rose from 0.06 at 1.5 to 0.34 at 10); natural
# patches carry more energy in the fine bands, so a milder 5 is the
# starting point. Another value is an arm to add, not an edit.
FINE_W = 5.0
W_SLOTS = {"guidance_mode": "nested",
           "guidance_matrix": f"(({GUIDANCE},{GUIDANCE}),({GUIDANCE},"
                              f"{FINE_W}),({GUIDANCE},{FINE_W}))"}
W_SWITCH = {"guidance_matrix": f"(({GUIDANCE},),({FINE_W},),({FINE_W},))"}
MAIN = "slots_w"
FM = ("--config.path.num_scales=1",)
ARMS = {
    "slots_w": (f"K-Flow, 2 condition slots, 25 % hybrids, texture guidance "
                f"{FINE_W:g}", SLOTS, (), "slots", W_SLOTS),
    "slots": ("K-Flow, 2 condition slots, 25 % hybrids", SLOTS, (), "slots"),
    "slots_nomix": ("K-Flow, 2 condition slots, no hybrids", SLOTS,
                    ("--config.cond.band_mix=0.0",
                     "--config.cond.mix_fine_classes=()"), "slots"),
    "switch": ("K-Flow, one label, switched at the band edge", COND, (),
               "switch"),
    "switch_w": (f"K-Flow, one label, switched at the band edge, bands 1-2 "
                 f"guidance {FINE_W:g}", COND, (), "switch", W_SWITCH),
    "fm_switch": ("flow matching, one label, switched at the same t", COND,
                  FM, "switch"),
    "fm_factorized": ("flow matching, factorized P_low v(A) + P_high v(B)",
                      COND, FM, "factorized"),
}
METRICS = (("acc_high", False), ("acc_low", False), ("leak", True),
           ("fd_ratio", True), ("colour_fd", True))
CONTINUOUS = ("fd_ratio", "colour_fd")


def _patches_module():
  from configs import patches  # pylint: disable=g-import-not-at-top
  return patches


def hybrid_rows() -> tuple:
  p = _patches_module()
  return tuple((a, b) for a in p.COLOUR_CLASSES for b in p.TEXTURE_CLASSES)


def consistent_rows() -> tuple:
  return tuple((c, c) for c in range(len(_patches_module().E3_PHOTOS)))


def _train(root, scale, name, seed):
  config, overrides = ARMS[name][1:3]
  return common.attempt(common.train, root, scale._replace(pinned=()),
                        f"mcp_{name}", config, overrides, seed,
                        scale.patches_budgets)


def data(scale):
  """(train, test) (images, labels) of configs/patches.py:cond's input."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import reference
  p = _patches_module()
  kw = dict(image_size=16, photos=p.E3_PHOTOS, eval_photos=(),
            patch_split="regions")
  n_train, n_test = (3000, 700) if scale.all_arms else (600, 210)
  return (reference.load_split("natural_patches", "train",
                               patches_per_epoch=n_train, **kw),
          reference.load_split("natural_patches", "test",
                               eval_patches=n_test, **kw))


def judges(kflow_run, scale):
  """(BandSplit at band 1 of the K-Flow run's bands, judges, joint
  features, (train, test) data)."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax import kamp
  from kflow_jax.evaluators import hybrid
  from kflow_jax.evaluators import patch_judges
  from kflow_jax.flow import paths
  p = _patches_module()
  rec = mc.path_record(kflow_run)
  tr = kamp.get("fourier", shape=(16, 16, 3))
  split = hybrid.BandSplit(paths.make_path(tr, cutoffs=tuple(rec["cutoffs"])))
  (x_tr, y_tr), (x_te, y_te) = data(scale)
  clfs = patch_judges.fit_judges(
      split, x_tr, y_tr, x_te, y_te, low_classes=p.COLOUR_CLASSES,
      high_classes=p.TEXTURE_CLASSES,
      steps=800 if scale.all_arms else 200)
  full = patch_judges.JointFeatures.fit(split, x_tr)
  return split, clfs, full, (x_te, y_te)


def _extra(name) -> dict:
  return ARMS[name][4] if len(ARMS[name]) > 4 else {}


def _tag(name, what) -> str:
  """Cache tag of a sample set: arms that share a run (slots / slots_w,
  switch / switch_w, fm_switch / fm_factorized) sample apart."""
  own = _extra(name) or ARMS[name][3] == "factorized"
  return what + (f"_{name}" if own else "")


def _sample_opts(name, kflow_path, rows) -> dict:
  how = ARMS[name][3]
  opts = {"slot_labels": mc.flag_rows(rows), "guidance": GUIDANCE, **_extra(name)}
  if how == "switch":
    # Label A while band 0 flows, B from band 1's start on.
    opts["label_switch_t"] = mc.flag_tuple(kflow_path["tau"][1:2])
  elif how == "factorized":
    opts["factorized_cutoffs"] = mc.flag_tuple(
        (0.0, kflow_path["cutoffs"][1], 1.0))
  return opts


def _scores(judged, x, pairs, ref) -> dict:
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import hybrid
  from kflow_jax.evaluators import patch_judges
  split, clfs, full, (x_te, y_te) = judged
  out = hybrid.score(split, clfs, x, pairs, full, ref)
  out["colour_fd"] = patch_judges.colour_fd(split, x, pairs[:, 0], x_te,
                                            y_te)
  return out


def _hybrid_scores(scale, name, run, kflow, judged, seed) -> dict:
  """acc_low, acc_high, leak, fd, colour_fd (hybrids) and fd_consistent."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import hybrid
  from kflow_jax.generate import sample_set
  step = max(scale.patches_budgets)
  kpath = mc.path_record(kflow)
  split, _, _, (x_te, y_te) = judged
  out = {}
  for kind, rows in (("hybrid", hybrid_rows()),
                     ("consistent", consistent_rows())):
    made = common.sample(run, scale, step, _tag(name, f"mcp_{kind}"),
                         _sample_opts(name, kpath, rows))
    d = sample_set.load_samples(made["dir"])
    x = d["images"].astype(np.float32) / 127.5 - 1.0
    pairs = np.asarray(d["labels"], np.int32)
    ref = hybrid.real_hybrids(split, x_te, y_te, pairs,
                              np.random.default_rng(1000 + seed))
    sc = _scores(judged, x, pairs, ref)
    if kind == "consistent":
      out["fd_consistent"] = sc["fd"]
    else:
      out.update({k: sc[k] for k in ("acc_low", "acc_high", "leak", "fd",
                                     "colour_fd", "ceiling_low",
                                     "ceiling_high")})
  out["fd_ratio"] = out["fd"] / out["fd_consistent"]
  return out


def real_scores(judged, scale, seed) -> dict:
  """What a perfect sampler scores: real hybrids of held-out crops (and
  real consistent pairs) scored as the samples are, FD against a second
  draw of the same pairs; colour_fd_real: the split-half baseline."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import hybrid
  from kflow_jax.evaluators import patch_judges
  split, _, _, (x_te, y_te) = judged
  out = {}
  for kind, rows in (("hybrid", hybrid_rows()),
                     ("consistent", consistent_rows())):
    reps = max(2, scale.num_samples // len(rows))
    pairs = np.asarray(rows * reps, np.int32)
    draw = lambda k: hybrid.real_hybrids(split, x_te, y_te, pairs,
                                         np.random.default_rng(k))
    sc = _scores(judged, draw(2000 + seed), pairs, draw(1000 + seed))
    if kind == "consistent":
      out["fd_consistent"] = sc["fd"]
    else:
      out.update({k: sc[k] for k in ("acc_low", "acc_high", "leak", "fd",
                                     "colour_fd")})
  out["fd_ratio"] = out["fd"] / out["fd_consistent"]
  out["colour_fd_real"] = patch_judges.colour_fd_real(
      split, x_te, y_te, _patches_module().COLOUR_CLASSES,
      np.random.default_rng(3000 + seed))
  return out


def _grid(scale, name, run, kflow, out_dir):
  """--mode=hybrid of `run`: colour photos by textures, one noise."""
  p = _patches_module()
  kpath = mc.path_record(kflow)
  opts = {k: v for k, v in _sample_opts(name, kpath, ()).items()
          if k != "slot_labels"}
  restore = {"row_classes": mc.flag_tuple(p.COLOUR_CLASSES),
             "col_classes": mc.flag_tuple(p.TEXTURE_CLASSES)}
  made = common.steer(run, scale, max(scale.patches_budgets), "hybrid",
                      _tag(name, "grid"), restore, opts)
  return made and common.copy_figure(made["png"], out_dir,
                                     f"multi_condition_patches_{name}.png")


def run(scale, root, out_dir) -> dict:
  names = list(ARMS) if scale.all_arms else [MAIN, "switch"]
  per_seed = {n: [{} for _ in scale.seeds] for n in names}
  judged = None
  real = []
  for k, seed in enumerate(scale.seeds):
    kflow = _train(root, scale, "switch", seed)
    if kflow is None:
      real.append({})
      continue
    if judged is None:
      judged = judges(kflow, scale)
    for name in names:
      r = _train(root, scale, name, seed)
      if r:
        per_seed[name][k] = common.attempt(
            _hybrid_scores, scale, name, r, kflow, judged, seed) or {}
    real.append(real_scores(judged, scale, seed))
  kflow0 = _train(root, scale, "switch", scale.seeds[0])
  figs = {}
  for name in names:
    r = _train(root, scale, name, scale.seeds[0])
    figs[name] = r and kflow0 and common.attempt(_grid, scale, name, r,
                                                 kflow0, out_dir)
  values = {n: {m: [rec.get(m) for rec in per_seed[n]] for m, _ in METRICS}
            for n in names}
  # Accuracies over a few hundred samples tie by chance; the FDs are
  # continuous (stats.paired's "identical" reading).
  paired = {n: {m: stats.paired(values[MAIN][m], values[n][m],
                                lower_is_better=low,
                                continuous=m in CONTINUOUS)
                for m, low in METRICS}
            for n in names if n != MAIN}
  done = sum(v is not None for v in values[MAIN]["acc_high"])
  rows = [[ARMS[n][0]] + [common.fmt(common.mean_std(values[n][m]))
                          for m, _ in METRICS] for n in names]
  real_row = ["real hybrids of held-out crops (the ceiling)"] + [
      common.fmt(common.mean_std([r.get(m) for r in real]))
      for m, _ in METRICS]
  ceil = {p: (judged[1][p].accuracy if judged else None)
          for p in ("low", "high")}
  baseline = common.mean_std([r.get("colour_fd_real") for r in real])
  one = lambda v: common.fmt({"mean": v, "std": 0, "n": 1})
  md = [
      "# Per-band conditions on natural patches (E3): colour photo coarse, "
      "texture fine", "",
      f"Scale `{scale.name}`: runs of {max(scale.patches_budgets)} steps, "
      f"seeds {list(scale.seeds)}, {scale.num_samples} samples per set, "
      f"Euler {scale.num_steps} steps, CFG {GUIDANCE}. Produced by "
      "`python -m experiments.multi_condition_patches`.", "",
      "Samples ask for colour photo A (classes 0-3 of "
      "`configs/patches.py`) in band 0 and grey texture B (classes 4-6) in "
      "bands 1-2. Judges (`kflow_jax/evaluators/patch_judges.py`, logistic "
      "regressions on colour / texture features), their held-out accuracy "
      "on their part of real crops from unseen regions of the same photos, "
      f"as stored: low-pass (colour) {one(ceil['low'])}, high-pass "
      f"(texture) {one(ceil['high'])}. fd_ratio = FD in the judges' "
      "features to real hybrids / the same run's FD on consistent pairs "
      "(A, A); colour_fd = FD of the low-pass colour features to real "
      f"crops of A (split-half real baseline {common.fmt(baseline)}).", "",
      f"Seeds with results: {done} of {len(scale.seeds)} (± is over "
      "those seeds).", "",
      common.table(["arm"] + [m for m, _ in METRICS], rows + [real_row]),
      "",
      f"{ARMS[MAIN][0]} against each arm, paired by seed (difference, 95 % "
      "interval, verdict):", "",
      *[f"- {stats.sentence(ARMS[MAIN][0], ARMS[n][0], m, paired[n][m])}"
        for n in paired for m, _ in METRICS], "",
      "## Grids (seed 0)", "",
      "`--mode=hybrid --config.restore.row_classes=(0,1,2,3) "
      "--config.restore.col_classes=(4,5,6)`: row i asks for colour photo "
      "i in band 0, column j for texture 4 + j in bands 1-2, every cell "
      f"from one noise (CFG {GUIDANCE}).", "",
      *[f"{ARMS[n][0]}:\n\n![{n}]({f})\n" for n, f in figs.items() if f]]
  result = {"scale": scale._asdict(), "per_seed": per_seed,
            "paired": paired, "ceilings": ceil, "real": real,
            "colour_fd_real": baseline, "figures": figs}
  common.write_result(out_dir, "multi_condition_patches", "\n".join(md),
                      result)
  return result


if __name__ == "__main__":
  common.main(run)
