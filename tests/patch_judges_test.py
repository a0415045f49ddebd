"""Plan E3's judges (kflow_jax/evaluators/patch_judges.py) on real patches:
configs/patches.py:cond's photos, split by region (held-out crops of the
same photos), the bands of its 3-band Fourier path."""
import functools

import numpy as np
import pytest

from configs import patches
from kflow_jax import kamp
from kflow_jax.evaluators import hybrid
from kflow_jax.evaluators import patch_judges as pj
from kflow_jax.evaluators import reference
from kflow_jax.flow import paths


@functools.lru_cache(maxsize=1)
def _data():
  kw = dict(image_size=16, photos=patches.E3_PHOTOS, eval_photos=(),
            patch_split="regions")
  x_tr, y_tr = reference.load_split("natural_patches", "train",
                                    patches_per_epoch=2000, **kw)
  x_te, y_te = reference.load_split("natural_patches", "test",
                                    eval_patches=500, **kw)
  path = paths.make_path(kamp.get("fourier", shape=(16, 16, 3)),
                         num_scales=3)
  split = hybrid.BandSplit(path, 1)   # slot 0 = band 0, slot 1 = bands 1-2
  judges = pj.fit_judges(split, x_tr, y_tr, x_te, y_te,
                         low_classes=patches.COLOUR_CLASSES,
                         high_classes=patches.TEXTURE_CLASSES, steps=600)
  return split, judges, (x_tr, y_tr), (x_te, y_te)


def test_ceilings_on_held_out_regions_are_well_above_chance():
  _, judges, _, _ = _data()
  # Chance: 1/4 colour photos, 1/3 textures (and the judges choose among
  # all 7 photos).
  assert judges["low"].accuracy > 0.7, judges["low"].accuracy
  assert judges["high"].accuracy > 0.7, judges["high"].accuracy
  assert judges["low"].classes == tuple(range(7))
  assert judges["high"].asked == patches.TEXTURE_CLASSES


@pytest.mark.parametrize("part", ["low", "high"])
def test_a_judge_fed_the_wrong_band_falls_below_chance(part):
  split, judges, _, (x_te, y_te) = _data()
  judge = judges[part]
  keep = np.isin(y_te, judge.asked)
  right = np.mean(judge.predict(getattr(split, part)(x_te[keep]))
                  == y_te[keep])
  other = "high" if part == "low" else "low"
  wrong = np.mean(judge.predict(getattr(split, other)(x_te[keep]))
                  == y_te[keep])
  assert right > 0.7 and wrong < 1.0 / len(judge.asked), (right, wrong)


def test_real_hybrids_score_as_their_halves_and_colour_fd():
  split, judges, (x_tr, _), (x_te, y_te) = _data()
  pairs = np.asarray([(a, b) for a in patches.COLOUR_CLASSES
                      for b in patches.TEXTURE_CLASSES] * 10, np.int32)
  draw = lambda k: hybrid.real_hybrids(split, x_te, y_te, pairs,
                                       np.random.default_rng(k))
  full = pj.JointFeatures.fit(split, x_tr)
  sc = hybrid.score(split, judges, draw(0), pairs, full, draw(1))
  assert sc["acc_low"] > 0.7 and sc["acc_high"] > 0.6, sc
  assert sc["leak"] < 0.15, sc
  # Swapped halves (texture coarse, colour fine) fail both judges.
  swapped = hybrid.score(split, judges, draw(0), pairs[:, ::-1])
  assert swapped["acc_low"] < 0.1 and swapped["acc_high"] < 0.1, swapped
  # Colour FD: real hybrids sit at the split-half level of real patches;
  # the same images asked for the next colour photo are far off.
  base = pj.colour_fd_real(split, x_te, y_te, patches.COLOUR_CLASSES,
                           np.random.default_rng(0))
  ok = pj.colour_fd(split, draw(0), pairs[:, 0], x_te, y_te)
  off = pj.colour_fd(split, draw(0), (pairs[:, 0] + 1) % 4, x_te, y_te)
  assert ok < 3 * base + 0.02 and off > 10 * max(ok, base), (ok, base, off)


def test_bad_inputs_name_the_problem():
  split = _data()[0]
  with pytest.raises(ValueError, match=r"RGB patches \[N, S, S, 3\]"):
    pj.colour_features(np.zeros((2, 16, 16, 1)))
  with pytest.raises(ValueError, match="at least two classes"):
    pj.fit_logistic(np.zeros((4, 3)), np.zeros(4))
  with pytest.raises(ValueError, match="at least two samples"):
    x = np.zeros((3, 16, 16, 3), np.float32)
    pj.colour_fd(split, x, np.array([0, 1, 1]), x, np.array([0, 0, 1]))
