"""Label-free features: a fixed, randomly initialised multi-scale conv net.

For data sets with no usable labels and no pretrained network that fits
them (natural_patches: 16x16 crops whose labels are the source photo, and
whose held-out split holds other photos) the Frechet distance is taken on
the features of a random conv net:

  features = the image's channel means (brightness, colour), then
  stage s: conv 3x3 (zero-mean random filters, He scale, no bias) -> ReLU
  -> the spatial mean of every channel is a feature -> 2x2 average pool ->
  stage s + 1.

Why this is principled: the spatial mean of ReLU(w * x) over random
filters w is a random-feature embedding of the distribution of local
patches at that stage's scale, and random shallow conv nets are known to
capture enough texture statistics to synthesise natural textures
(Ustyuzhaninov et al. 2017, "What does it take to generate natural
textures?"). One mean per channel per scale gives a low-dimensional
(C + sum(widths)) vector, so the Gaussian fit is well estimated from a few
hundred images, and the stages tie the distance to coarse and fine scales,
the axis K-Flow works along. It is a sanity metric: it has no notion of
semantics, and its values are comparable only between runs with the same
seed and widths (recorded in the metric name by `cheap_metrics`).

Weights are drawn with numpy's PCG64 from the seed, so they do not depend
on the jax version or device.
"""
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import validate

DEFAULT_WIDTHS = (32, 32, 32)
_EVAL_BATCH = 256


@dataclasses.dataclass(frozen=True)
class RandomFeatures:
  """Fixed random conv weights; `features(images)` -> [N, feature_dim]."""
  kernels: tuple  # per stage float32 [3, 3, C_in, C_out] (HWIO)
  channels: int
  seed: int
  widths: tuple

  @property
  def feature_dim(self) -> int:
    return self.channels + int(sum(self.widths))

  def features(self, images) -> np.ndarray:
    """float32 [N, C + sum(widths)]: image channel means, then per-stage
    channel means of the ReLU maps."""
    x = validate.images(images)
    if x.shape[-1] != self.channels:
      raise ValueError(
          f"random features were built for {self.channels} channels but the "
          f"images have {x.shape[-1]}; build them with "
          f"random_features.build(channels={x.shape[-1]}).")
    n = x.shape[0]
    x = np.concatenate(
        [x, np.zeros(((-n) % _EVAL_BATCH,) + x.shape[1:], x.dtype)])
    out = [np.asarray(_apply(self.kernels, x[i:i + _EVAL_BATCH]))
           for i in range(0, x.shape[0], _EVAL_BATCH)]
    return np.concatenate(out)[:n]


@jax.jit
def _apply(kernels, x):
  feats = [jnp.mean(x, axis=(1, 2))]  # brightness / colour
  for k in kernels:
    x = jax.nn.relu(jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    feats.append(jnp.mean(x, axis=(1, 2)))
    # Pool while the map is larger than 1x1; the last stages of a tiny
    # image then see the same (whole-image) scale.
    if x.shape[1] > 1 and x.shape[2] > 1:
      x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1),
                                (1, 2, 2, 1), "VALID") / 4.0
  return jnp.concatenate(feats, axis=-1)


def build(channels: int, seed: int = 0,
          widths: Sequence[int] = DEFAULT_WIDTHS) -> RandomFeatures:
  """The random feature net for images with `channels` channels."""
  return _build(int(channels), int(seed), tuple(int(w) for w in widths))


@functools.lru_cache(maxsize=16)
def _build(channels: int, seed: int, widths: tuple) -> RandomFeatures:
  if int(channels) < 1 or not widths or min(widths) < 1:
    raise ValueError(
        f"need channels >= 1 and positive widths, got channels={channels}, "
        f"widths={widths}.")
  rng = np.random.default_rng(int(seed))
  kernels, c_in = [], int(channels)
  for w in widths:
    # He-normal: keeps the activation scale about constant through ReLUs,
    # so no stage dominates the distance by magnitude alone.
    k = rng.standard_normal((3, 3, c_in, w))
    # Zero spatial mean: a random filter's response is otherwise dominated
    # by the local level (its DC gain), which made the distance blind to
    # blur (measured: a 2x2 box blur of natural patches scored below two
    # halves of the same set). Levels enter through the image means instead.
    k -= k.mean(axis=(0, 1), keepdims=True)
    k *= np.sqrt(2.0 / (9 * c_in)) / k.std()
    kernels.append(jnp.asarray(k, jnp.float32))
    c_in = w
  return RandomFeatures(tuple(kernels), int(channels), int(seed), widths)


def frechet_distance(images_a, images_b, seed: int = 0,
                     widths: Sequence[int] = DEFAULT_WIDTHS) -> float:
  """Random-feature Frechet distance between two image sets."""
  a = validate.images(images_a, "images_a", min_count=2)
  b = validate.images(images_b, "images_b", min_count=2)
  validate.same_image_shape(a, b, "images_a", "images_b")
  net = build(a.shape[-1], seed, widths)
  return frechet.frechet_from_features(net.features(a), net.features(b))
