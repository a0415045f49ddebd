"""Scores of per-band conditions: is a sample's coarse part of class A and
its fine part of class B? (docs/method.md#condition-slots)

A sample asked for the pair (A, B) (condition slots, flow/slots.py, or a
one-label run's label switch or factorized sum) is split by a run's bands
into its low-pass part P_low x (bands below `split_band`) and its
high-pass part P_high x = x - P_low x (`BandSplit`). Band classifiers, the
CNN of evaluators/classifier.py trained on P_low x and on P_high x of the
training images (`fit_band_classifiers`), judge each part; their accuracy
on held-out images is the ceiling, and real hybrids scored the same way
(`score` of `real_hybrids`) show what a perfect sampler would get. `score`
reports

  acc_low   P[C_low(P_low x) = A]
  acc_high  P[C_high(P_high x) = B]
  leak      P[C_high(P_high x) = A] over pairs with A != B (the fine part
            drawn like the coarse class instead of the asked one)
  fd        classifier FD (the full-image classifier's features) to real
            hybrids H(A, B) = P_low x_A + P_high x_B of held-out images
            (`real_hybrids`)

Everything is float32 in [-1, 1] as the classifiers take it; real hybrids
may leave that range (a Fourier split is not a convex mix), so `stored`
rounds them as sample chunks store images (uint8), and the ceilings are
measured on stored hybrids too.
"""
import dataclasses
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from kflow_jax.evaluators import classifier as classifier_lib
from kflow_jax.flow import paths as paths_lib


@dataclasses.dataclass(frozen=True)
class BandSplit:
  """The low / high split of images by a path's bands."""
  path: paths_lib.Path
  split_band: int = 1

  def __post_init__(self):
    if not 1 <= self.split_band < self.path.num_bands:
      raise ValueError(
          f"split_band={self.split_band} must lie in 1.."
          f"{self.path.num_bands - 1}: bands below it are the low part.")
    if not self.path.transform.orthonormal:
      raise ValueError(
          f"the band split needs an orthonormal transform (low + high = x, "
          f"each an orthogonal projection); {self.path.transform.name!r} "
          "is not.")

  def low(self, x) -> np.ndarray:
    tr = self.path.transform
    keep = self.path.band < self.split_band
    out = []
    for i in range(0, len(x), 512):
      c = tr.forward(jnp.asarray(x[i:i + 512], jnp.float32))
      out.append(np.asarray(tr.inverse(jnp.where(keep, c, 0))))
    return np.concatenate(out).astype(np.float32)

  def high(self, x) -> np.ndarray:
    return (np.asarray(x, np.float32) - self.low(x)).astype(np.float32)


def stored(x) -> np.ndarray:
  """Images as a sample chunk stores them: clipped to [-1, 1], rounded to
  uint8, back to floats."""
  u8 = np.round((np.clip(np.asarray(x, np.float32), -1, 1) + 1) * 127.5)
  return (u8 / 127.5 - 1.0).astype(np.float32)


def fit_band_classifiers(split: BandSplit, x_train, y_train, x_test, y_test,
                         *, num_classes: int, steps: int = 1000,
                         seed: int = 0, dataset: str = "") -> dict:
  """{"low", "high": Classifier} trained on P_low x / P_high x of the
  training images; each one's `accuracy` is its ceiling: on that part of
  the held-out images as stored (`stored`)."""
  out = {}
  for part in ("low", "high"):
    f = getattr(split, part)
    params = classifier_lib.train(f(x_train), y_train,
                                  num_classes=num_classes, steps=steps,
                                  seed=seed)
    clf = classifier_lib.Classifier(
        params=params, dataset=f"{dataset}:{part}",
        image_shape=tuple(np.asarray(x_train).shape[1:]),
        num_classes=num_classes, steps=steps, seed=seed)
    acc = float(np.mean(clf.predict(f(stored(x_test))) == y_test))
    out[part] = dataclasses.replace(clf, accuracy=acc)
  return out


def real_hybrids(split: BandSplit, x, y, pairs: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
  """H(A, B) = P_low x_A + P_high x_B for each pair (A, B) [N, 2], with x_A
  and x_B drawn at random from the images of classes A and B, as stored."""
  y = np.asarray(y)
  by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
  pick = lambda c: rng.choice(by_class[int(c)])
  ia = np.array([pick(a) for a in pairs[:, 0]])
  ib = np.array([pick(b) for b in pairs[:, 1]])
  x = np.asarray(x, np.float32)
  return stored(split.low(x[ia]) + split.high(x[ib]))


def score(split: BandSplit, clfs: dict, samples, pairs,
          full: Optional[classifier_lib.Classifier] = None,
          reference=None) -> dict:
  """acc_low, acc_high, leak (A != B pairs; None without any), and with a
  full-image classifier and real hybrids the classifier FD to them."""
  x = np.asarray(samples, np.float32)
  pairs = np.asarray(pairs, np.int32)
  pred_low = clfs["low"].predict(split.low(x))
  pred_high = clfs["high"].predict(split.high(x))
  differ = pairs[:, 0] != pairs[:, 1]
  out = {
      "acc_low": float(np.mean(pred_low == pairs[:, 0])),
      "acc_high": float(np.mean(pred_high == pairs[:, 1])),
      "leak": (float(np.mean(pred_high[differ] == pairs[differ, 0]))
               if differ.any() else None),
      "ceiling_low": clfs["low"].accuracy,
      "ceiling_high": clfs["high"].accuracy,
      "count": int(len(x)),
  }
  if full is not None and reference is not None:
    out["fd"] = classifier_lib.frechet_distance(full, x, reference)
  return out


def pairs_grid(num_classes: int, per_pair: int,
               include_same: bool = False) -> np.ndarray:
  """[(A, B)] rows: every ordered pair of distinct classes (and with
  include_same the pairs (A, A)), each repeated per_pair times in a row
  block order that `slot_labels` rows reproduce (sample i: row i % R)."""
  rows = [(a, b) for a in range(num_classes) for b in range(num_classes)
          if include_same or a != b]
  return np.asarray(rows * int(per_pair), np.int32)


def rows_of(pairs: Sequence) -> tuple:
  """config.sample.slot_labels rows for a pairs_grid (its first R rows)."""
  seen, rows = set(), []
  for a, b in np.asarray(pairs).tolist():
    if (a, b) in seen:
      break
    seen.add((a, b))
    rows.append((a, b))
  return tuple(rows)
