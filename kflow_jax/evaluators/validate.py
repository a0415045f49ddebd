"""Input checks shared by the metrics: image sets are float [N, H, W, C]."""
import numpy as np


def images(x, name: str = "images", min_count: int = 1) -> np.ndarray:
  """float32 [N, H, W, C] array of x, or a ValueError naming the problem."""
  a = np.asarray(x)
  if a.ndim != 4:
    raise ValueError(
        f"{name} must be a float array [N, H, W, C] in [-1, 1], got shape "
        f"{a.shape}; add a channel axis for grey images (x[..., None]).")
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(
        f"{name} must be floats in [-1, 1], got dtype {a.dtype}; convert "
        "uint8 images with x / 127.5 - 1.")
  if a.shape[0] < min_count:
    raise ValueError(
        f"{name} needs at least {min_count} images, got {a.shape[0]}.")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} contain NaN or inf; the sampler diverged.")
  return a.astype(np.float32, copy=False)


def same_image_shape(a: np.ndarray, b: np.ndarray, name_a: str = "samples",
                     name_b: str = "reference"):
  """Raises unless a and b have the same [H, W, C]."""
  if a.shape[1:] != b.shape[1:]:
    raise ValueError(
        f"{name_a} have image shape {a.shape[1:]} but {name_b} have "
        f"{b.shape[1:]}; compare images of the same size and channels "
        "(resize one set, or load the reference at the model's image_size).")
