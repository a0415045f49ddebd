"""Images -> the 299x299 [-1, 1] input of the FID Inception, two protocols.

The published numbers come from two pipelines that differ only here (the
network and weights are the same), so both are reproduced exactly:

  "pytorch_fid"  pytorch-fid / clean FID tables: floats in [0, 1] (uint8 is
                 divided by 255), torch F.interpolate(bilinear,
                 align_corners=False) to 299, i.e. half-pixel centres
                 src = (dst + 0.5) * in / out - 0.5 clamped at 0, no
                 antialiasing; then 2x - 1.
  "adm"          the ADM evaluator (guided-diffusion, TF graph): floats in
                 [0, 255] (uint8 as is), TF1 legacy ResizeBilinear
                 (align_corners=False, half_pixel_centers=False), i.e.
                 src = dst * in / out; then (x - 128) / 128, so 255 maps to
                 0.9921875, not 1.

Samples reach both as uint8. ADM's sampler truncates, ((x + 1) * 127.5)
.clamp(0, 255).to(uint8), and its evaluator reads only uint8, so under
"adm" [-1, 1] samples are truncated (QUANTIZATION; fid.quantize, the sample
sets of --mode=sample) and float inputs in [0, 255] are floored here;
"pytorch_fid" rounds to the nearest level, as image savers do.

Both resizes are separable: each output pixel lerps the two source pixels
lo = floor(src) and hi = min(lo + 1, in - 1). jax.image.resize is not used:
it antialiases when shrinking unless told not to, and has no legacy TF mode.
Everything is a pure jnp function of [N, H, W, C] arrays, safe under jit.
"""
import jax.numpy as jnp
import numpy as np

PROTOCOLS = ("pytorch_fid", "adm")
# How each protocol's pipeline turns [-1, 1] samples into uint8
# (generate.files.to_uint8, generate.sample_set.QUANTIZATIONS).
QUANTIZATION = {"pytorch_fid": "round", "adm": "truncate"}
INCEPTION_SIZE = 299


def _source_coords(in_size: int, out_size: int, half_pixel: bool):
  """lo, hi indices and the weight of hi for each output pixel (numpy)."""
  # float32 like both references (torch's opmath and TF's kernel use float).
  scale = np.float32(in_size) / np.float32(out_size)
  dst = np.arange(out_size, dtype=np.float32)
  if half_pixel:
    src = np.maximum((dst + np.float32(0.5)) * scale - np.float32(0.5), 0)
  else:
    src = dst * scale
  lo = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = (src - lo).astype(np.float32)
  return lo, hi, frac


def _resize_axis(x, axis: int, out_size: int, half_pixel: bool):
  in_size = x.shape[axis]
  if in_size == out_size:
    return x
  lo, hi, frac = _source_coords(in_size, out_size, half_pixel)
  shape = [1] * x.ndim
  shape[axis] = out_size
  frac = jnp.asarray(frac).reshape(shape)
  a, b = jnp.take(x, lo, axis=axis), jnp.take(x, hi, axis=axis)
  return a + (b - a) * frac


def resize_bilinear(images, size: int = INCEPTION_SIZE,
                    half_pixel: bool = True):
  """Bilinear resize of [N, H, W, C] to [N, size, size, C], no antialias.

  half_pixel=True is torch's align_corners=False; False is TF1's legacy
  ResizeBilinear. An axis already at `size` is left untouched, as in both.
  """
  x = jnp.asarray(images, jnp.float32)
  x = _resize_axis(x, 1, size, half_pixel)
  return _resize_axis(x, 2, size, half_pixel)


def _as_rgb(images):
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
        f"images must be [N, H, W, 3] (or 1 channel), got shape "
        f"{images.shape}. Decode latents to pixels first.")
  if images.shape[-1] == 1:  # pytorch-fid converts grey images to RGB
    images = jnp.repeat(images, 3, axis=-1)
  return images


def preprocess(images, protocol: str = "pytorch_fid",
               size: int = INCEPTION_SIZE):
  """uint8 (or protocol-range float) [N, H, W, C] -> Inception input.

  Args:
    images: uint8 in [0, 255], or floats in [0, 1] for "pytorch_fid" and in
      [0, 255] for "adm" (their native ranges; "adm" floors floats, as the
      uint8 cast of its pipeline does). Generated [-1, 1] samples should be
      quantised to uint8 first (fid.quantize), as the published pipelines
      do.
    protocol: "pytorch_fid" or "adm" (see the module docstring).
    size: 299 for every published number.

  Returns:
    float32 [N, size, size, 3] in [-1, 1].
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; use one of "
                     f"{PROTOCOLS}.")
  is_uint8 = jnp.asarray(images).dtype == jnp.uint8
  x = _as_rgb(jnp.asarray(images, jnp.float32))
  if protocol == "pytorch_fid":
    if is_uint8:
      x = x / 255.0
    return 2.0 * resize_bilinear(x, size, half_pixel=True) - 1.0
  if not is_uint8:  # ADM's evaluator sees the uint8 its sampler truncated
    x = jnp.floor(jnp.clip(x, 0.0, 255.0))
  x = resize_bilinear(x, size, half_pixel=False)
  return (x - 128.0) * 0.0078125


def check_range(images, protocol: str):
  """Host-side check of a numpy batch's value range (outside jit)."""
  x = np.asarray(images)
  if x.dtype == np.uint8 or x.size == 0:
    return
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"images must be uint8 or float, got {x.dtype}.")
  hi = 1.0 if protocol == "pytorch_fid" else 255.0
  lo_v, hi_v = float(x.min()), float(x.max())
  if lo_v < -1e-3 or hi_v > hi + 1e-3:
    raise ValueError(
        f"float images for protocol {protocol!r} must lie in [0, {hi:g}], "
        f"got [{lo_v:.3g}, {hi_v:.3g}]. Pass uint8 images (e.g. "
        "evaluators.samples.to_uint8 of [-1, 1] samples) instead.")
