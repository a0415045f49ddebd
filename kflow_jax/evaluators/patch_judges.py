"""Judges of plan E3's hybrids: is a patch's low-pass part the colour of
photo A and its high-pass part the texture of photo B?
(docs/method.md#condition-slots)

Digits are judged by CNNs of each band part (evaluators/hybrid.py); natural
patches have no digit shape to learn, and what tells their photos apart is
simpler: the colour statistics of the low-pass part and the spectrum and
local contrast of the high-pass part. So each judge is a multinomial
logistic regression (written here in jax, full-batch Adam) on a few
hand-made features of its part:

  colour_features   P_low x: mean and standard deviation of R, G, B and
                    the mean absolute chroma |R - G|, |B - G|  (8)
  texture_features  P_high x: the log power of its grey part in radial
                    frequency rings (6) and orientation sectors (4), log
                    mean and spread of the local variance in 4x4 windows,
                    kurtosis, and the log energy of its chroma (what makes
                    a colour photo's detail differ from a grey texture's)
                    (14)

`fit_judges` trains both on every photo of the data (so a judge can say a
fine part looks like the colour photo A: the leak) and sets each judge's
`accuracy`, its ceiling, on held-out crops (natural_patches with
patch_split="regions": unseen regions of the same photos) of the classes
its slot is asked for, as stored (`hybrid.stored`). `hybrid.score` takes
them as it takes the digit CNNs (`predict`, `accuracy`), and `JointFeatures`
(both feature sets, standardised on real patches) in place of the
full-image classifier for the FD to real hybrids. `colour_fd` is the
Frechet distance of the low-pass colour features of samples asked for
photo A to real held-out patches of A, averaged over A; `colour_fd_real`
its split-half baseline on real patches.
"""
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import hybrid

_RINGS = 6
_SECTORS = 4
_EPS = 1e-6


def _images(x) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
    raise ValueError(f"patch judges take RGB patches [N, S, S, 3], got "
                     f"shape {x.shape}.")
  return x


def colour_features(low) -> np.ndarray:
  """float32 [N, 8] of low-pass parts [N, S, S, 3]."""
  x = _images(low)
  mean, std = x.mean(axis=(1, 2)), x.std(axis=(1, 2))
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  chroma = np.stack([np.abs(r - g).mean(axis=(1, 2)),
                     np.abs(b - g).mean(axis=(1, 2))], axis=1)
  return np.concatenate([mean, std, chroma], axis=1).astype(np.float32)


def _bins(size: int):
  """Ring [S, S] and sector [S, S] index of each FFT frequency (-1: DC)."""
  f = np.fft.fftfreq(size)
  fy, fx = np.meshgrid(f, f, indexing="ij")
  r = np.sqrt(fx ** 2 + fy ** 2) / np.sqrt(0.5)          # 0..1
  ring = np.minimum((r * _RINGS).astype(int), _RINGS - 1)
  angle = np.mod(np.arctan2(fy, fx), np.pi)
  sector = np.minimum((angle / np.pi * _SECTORS).astype(int), _SECTORS - 1)
  dc = r == 0
  return np.where(dc, -1, ring), np.where(dc, -1, sector)


def texture_features(high) -> np.ndarray:
  """float32 [N, 14] of high-pass parts [N, S, S, 3]."""
  x = _images(high).astype(np.float64)
  n, s = x.shape[0], x.shape[1]
  grey = x.mean(axis=-1)
  power = np.abs(np.fft.fft2(grey)) ** 2 / s ** 2
  ring, sector = _bins(s)
  rings = np.stack([power[:, ring == k].mean(axis=1) for k in range(_RINGS)],
                   axis=1)
  sectors = np.stack([power[:, sector == k].mean(axis=1)
                      for k in range(_SECTORS)], axis=1)
  w = 4
  blocks = grey[:, :s // w * w, :s // w * w].reshape(n, s // w, w, s // w, w)
  local = np.log(blocks.var(axis=(2, 4)).reshape(n, -1) + _EPS)
  centred = grey - grey.mean(axis=(1, 2), keepdims=True)
  var = (centred ** 2).mean(axis=(1, 2))
  kurt = (centred ** 4).mean(axis=(1, 2)) / (var ** 2 + _EPS)
  chroma = ((x - grey[..., None]) ** 2).mean(axis=(1, 2, 3))
  out = np.concatenate([
      np.log(rings + _EPS), np.log(sectors + _EPS),
      local.mean(axis=1, keepdims=True), local.std(axis=1, keepdims=True),
      np.log(kurt + _EPS)[:, None], np.log(chroma + _EPS)[:, None]], axis=1)
  return out.astype(np.float32)


FEATURES = {"low": colour_features, "high": texture_features}


@dataclasses.dataclass(frozen=True)
class Judge:
  """A logistic regression on `FEATURES[part]` of a band part.

  classes: the data's class id of each output; asked: the classes its
  slot is asked for (its ceiling `accuracy` is over those)."""
  part: str
  mean: np.ndarray
  std: np.ndarray
  weights: np.ndarray
  bias: np.ndarray
  classes: tuple
  asked: tuple
  accuracy: float = float("nan")

  def logits(self, part_images) -> np.ndarray:
    f = (FEATURES[self.part](part_images) - self.mean) / self.std
    return f @ self.weights + self.bias

  def predict(self, part_images) -> np.ndarray:
    """int32 [N]: the class id (in `classes`) of each part image."""
    return np.asarray(self.classes, np.int32)[
        np.argmax(self.logits(part_images), axis=-1)]


def fit_logistic(features, labels, *, steps: int = 800, l2: float = 1e-3,
                 learning_rate: float = 0.05):
  """(mean, std, weights [D, C], bias [C], classes) of a multinomial
  logistic regression on standardised features, full-batch Adam."""
  f = np.asarray(features, np.float32)
  y = np.asarray(labels)
  classes = tuple(int(c) for c in np.unique(y))
  if len(classes) < 2 or len(f) != len(y):
    raise ValueError(f"a judge needs features of at least two classes and "
                     f"one label per row, got {len(f)} rows of classes "
                     f"{classes} and {len(y)} labels.")
  mean, std = f.mean(axis=0), f.std(axis=0) + _EPS
  z = jnp.asarray((f - mean) / std)
  idx = jnp.asarray(np.searchsorted(classes, y))
  opt = optax.adam(learning_rate)
  params = (jnp.zeros((f.shape[1], len(classes))), jnp.zeros(len(classes)))

  def loss(p):
    logits = z @ p[0] + p[1]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, idx)
    return nll.mean() + l2 * jnp.sum(p[0] ** 2)

  def step(carry, _):
    p, state = carry
    updates, state = opt.update(jax.grad(loss)(p), state)
    return (optax.apply_updates(p, updates), state), None
  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None,
                                length=int(steps))
  return (mean, std, np.asarray(params[0]), np.asarray(params[1]), classes)


def fit_judges(split: hybrid.BandSplit, x_train, y_train, x_test, y_test,
               *, low_classes: Sequence[int], high_classes: Sequence[int],
               steps: int = 800) -> dict:
  """{"low": colour judge, "high": texture judge} trained on the parts of
  every training patch; each one's accuracy (ceiling) on its part of the
  held-out patches of the classes it is asked for, as stored."""
  y_test = np.asarray(y_test)
  out = {}
  for part, asked in (("low", low_classes), ("high", high_classes)):
    f = getattr(split, part)
    asked = tuple(int(c) for c in asked)
    missing = set(asked) - set(np.unique(y_train).tolist())
    if missing:
      raise ValueError(f"the {part} judge is asked for classes {sorted(missing)} "
                       "that no training patch has.")
    fit = fit_logistic(FEATURES[part](f(x_train)), y_train, steps=steps)
    judge = Judge(part, *fit, asked=asked)
    keep = np.isin(y_test, asked)
    acc = float(np.mean(judge.predict(f(hybrid.stored(x_test[keep])))
                        == y_test[keep]))
    out[part] = dataclasses.replace(judge, accuracy=acc)
  return out


@dataclasses.dataclass(frozen=True)
class JointFeatures:
  """Colour features of P_low x and texture features of P_high x,
  standardised on real patches: the feature space of the FD to real
  hybrids (`hybrid.score`'s `full`)."""
  split: hybrid.BandSplit
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, split: hybrid.BandSplit, x_real) -> "JointFeatures":
    f = _joint(split, x_real)
    return cls(split, f.mean(axis=0), f.std(axis=0) + _EPS)

  def features(self, images) -> np.ndarray:
    return (_joint(self.split, images) - self.mean) / self.std


def _joint(split, x) -> np.ndarray:
  x = _images(x)
  return np.concatenate([colour_features(split.low(x)),
                         texture_features(split.high(x))], axis=1)


def colour_fd(split: hybrid.BandSplit, samples, asked, x_ref, y_ref) -> float:
  """Mean over the asked colour photos A of the Frechet distance of the
  colour features of P_low(samples asked for A) to those of real patches
  of A (x_ref, y_ref). asked [N]: each sample's slot-0 class."""
  asked, y_ref = np.asarray(asked), np.asarray(y_ref)
  feats = colour_features(split.low(samples))
  ref = colour_features(split.low(x_ref))
  out = []
  for a in np.unique(asked):
    if (asked == a).sum() < 2 or (y_ref == a).sum() < 2:
      raise ValueError(f"colour_fd needs at least two samples and two real "
                       f"patches of photo {a}.")
    out.append(frechet.frechet_from_features(feats[asked == a],
                                             ref[y_ref == a]))
  return float(np.mean(out))


def colour_fd_real(split: hybrid.BandSplit, x_ref, y_ref, classes,
                   rng: np.random.Generator) -> float:
  """colour_fd's split-half baseline: each photo's real patches halved at
  random, one half against the other."""
  y_ref = np.asarray(y_ref)
  xs, ys, rest = [], [], []
  for a in classes:
    idx = rng.permutation(np.flatnonzero(y_ref == a))
    half = len(idx) // 2
    xs.append(np.asarray(x_ref)[idx[:half]])
    ys.append(np.full(half, a))
    rest.append(idx[half:])
  rest = np.concatenate(rest)
  return colour_fd(split, np.concatenate(xs), np.concatenate(ys),
                   np.asarray(x_ref)[rest], y_ref[rest])

