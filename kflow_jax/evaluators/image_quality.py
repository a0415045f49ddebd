"""PSNR and SSIM of image pairs (reconstructions vs originals), via dm-pix.

These compare paired images (an autoencoder or K-amplitude round trip, a
sample against the image it was steered towards), not two sample sets.
Images are float [N, H, W, C] in [-1, 1]; they are mapped to [0, 1]
before dm-pix, which assumes a data range of 1. For PSNR that is the same
as data range 2 on [-1, 1]; SSIM's luminance term is not shift-invariant,
so [0, 1] is what makes the numbers comparable with the usual ones
(skimage `structural_similarity(..., data_range=1)`, tf.image.ssim).
"""
from typing import Optional

import dm_pix
import jax.numpy as jnp
import numpy as np

from kflow_jax.evaluators import validate

SSIM_FILTER_SIZE = 11  # Wang et al. 2004: 11x11 Gaussian, sigma 1.5.
SSIM_FILTER_SIGMA = 1.5


def _pair(a, b):
  x = validate.images(a, "images_a")
  y = validate.images(b, "images_b")
  if x.shape != y.shape:
    raise ValueError(
        f"PSNR/SSIM compare image pairs: shapes {x.shape} and {y.shape} "
        "differ; pass two arrays of the same [N, H, W, C], image i of one "
        "paired with image i of the other.")
  # Generated images may overshoot [-1, 1]; they are scored as they would
  # be saved, saturated to the valid range.
  to01 = lambda v: jnp.clip((jnp.asarray(v) + 1.0) / 2.0, 0.0, 1.0)
  return to01(x), to01(y)


def psnr(images_a, images_b) -> np.ndarray:
  """Per-image PSNR in dB, float32 [N] (inf for identical images)."""
  x, y = _pair(images_a, images_b)
  return np.asarray(dm_pix.psnr(x, y))


def ssim(images_a, images_b, filter_size: Optional[int] = None) -> np.ndarray:
  """Per-image SSIM (mean over the valid window positions and channels),
  float32 [N].

  Args:
    images_a, images_b: float [N, H, W, C] in [-1, 1], paired.
    filter_size: Gaussian window side; None: 11 (the standard), reduced to
      the largest odd size that fits images smaller than 11 pixels (dm-pix
      filters with 'valid' padding, so the window must fit).
  """
  x, y = _pair(images_a, images_b)
  side = min(x.shape[1], x.shape[2])
  if filter_size is None:
    filter_size = min(SSIM_FILTER_SIZE, side - (1 - side % 2))
  if not 1 <= int(filter_size) <= side:
    raise ValueError(
        f"SSIM filter_size must be in [1, {side}] for {side}-pixel images, "
        f"got {filter_size}.")
  return np.asarray(dm_pix.ssim(x, y, max_val=1.0,
                                filter_size=int(filter_size),
                                filter_sigma=SSIM_FILTER_SIGMA))


def paired_metrics(images_a, images_b) -> dict:
  """{"psnr": mean of per-image dB, "ssim": mean of per-image SSIM}.

  The mean PSNR is inf when any pair is identical (zero error).
  """
  return {"psnr": float(np.mean(psnr(images_a, images_b))),
          "ssim": float(np.mean(ssim(images_a, images_b)))}
