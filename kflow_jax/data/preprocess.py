"""Per-example preprocessing: crop, resize, flip, scale to [-1, 1].

Everything here runs inside grain's map step (possibly in worker processes),
so the transforms are small picklable classes holding plain settings, and
all randomness comes from the per-example numpy Generator that grain's
`random_map` derives from (seed, epoch, index): a given example gets the same
flip in every run, and resuming from a saved iterator state replays exactly.

Records coming from the data sources are dicts with
  "image": uint8 [H, W, C] (any size) or float32 [S, S, C] already in [-1, 1]
  "label": an int
and leave as {"image": float32 [S, S, C] in [-1, 1], "label": np.int32}.
"""
import io

import grain
import numpy as np
from PIL import Image

# Crop modes for images whose size differs from the target size.
CROP_MODES = ("center", "resize")


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
  """ADM's center crop (guided-diffusion image_datasets.center_crop_arr).

  Halves the image with a BOX filter while its short side is at least twice
  the target (cheap and alias-free), then BICUBIC-resizes so the short side
  equals `image_size`, then crops the centre square. LFM and K-Flow use this
  for CelebA-HQ / LSUN / ImageNet, so FIDs stay comparable.
  """
  while min(*pil_image.size) >= 2 * image_size:
    pil_image = pil_image.resize(
        tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
  scale = image_size / min(*pil_image.size)
  pil_image = pil_image.resize(
      tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
  arr = np.array(pil_image)
  crop_y = (arr.shape[0] - image_size) // 2
  crop_x = (arr.shape[1] - image_size) // 2
  return arr[crop_y:crop_y + image_size, crop_x:crop_x + image_size]


def resize_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
  """Resizes the whole image to a square (aspect ratio not kept), BICUBIC."""
  return np.array(pil_image.resize((image_size, image_size),
                                   resample=Image.BICUBIC))


def decode_image(data) -> np.ndarray:
  """Returns uint8 [H, W, C] from encoded bytes (PNG/JPEG) or an array."""
  if isinstance(data, (bytes, bytearray, memoryview)):
    with Image.open(io.BytesIO(bytes(data))) as img:
      img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
      arr = np.asarray(img)
  else:
    arr = np.asarray(data)
  if arr.ndim == 2:
    arr = arr[..., None]
  return arr


def fit_image(image: np.ndarray, image_size: int, crop: str,
              channels: int) -> np.ndarray:
  """uint8 [H, W, C] of any size -> uint8 [S, S, channels]."""
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 4:  # RGBA: drop alpha, as PIL's convert("RGB") does
    image = image[..., :3]
  if image.shape[:2] != (image_size, image_size):
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if crop == "center":
      image = center_crop_arr(pil, image_size)
    elif crop == "resize":
      image = resize_arr(pil, image_size)
    else:
      raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}.")
    if image.ndim == 2:
      image = image[..., None]
  if image.shape[-1] != channels:
    if image.shape[-1] == 1:
      image = np.repeat(image, channels, axis=-1)
    elif channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
      image = np.round(image[..., :3].astype(np.float32)
                       @ np.array([0.299, 0.587, 0.114], np.float32))
      image = image.clip(0, 255).astype(np.uint8)[..., None]
    else:
      raise ValueError(
          f"cannot turn {image.shape[-1]} channels into {channels}.")
  return image


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]; float input is passed through."""
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 127.5 - 1.0
  return image.astype(np.float32, copy=False)


class ImagePreprocess(grain.transforms.RandomMap):
  """Raw record -> {"image": float32 [S, S, C] in [-1, 1], "label": int32}.

  Attributes:
    image_size: target side S.
    channels: target channel count C.
    crop: "center" (ADM center_crop_arr) or "resize" when sizes differ.
    random_flip: flip horizontally with probability 1/2, using the
      per-example rng, so the flip is a pure function of (seed, epoch, index).
  """

  def __init__(self, image_size: int, channels: int, crop: str = "center",
               random_flip: bool = False):
    if crop not in CROP_MODES:
      raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}.")
    self.image_size = int(image_size)
    self.channels = int(channels)
    self.crop = crop
    self.random_flip = bool(random_flip)

  def random_map(self, element, rng: np.random.Generator):
    image = element["image"]
    if isinstance(image, (bytes, bytearray)) or image.dtype == np.uint8:
      image = fit_image(decode_image(image), self.image_size, self.crop,
                        self.channels)
    image = to_unit_range(image)
    # Draw the coin even without flipping, so turning the flip on or off does
    # not change any other random choice made from this rng downstream.
    flip = rng.random() < 0.5
    if self.random_flip and flip:
      image = image[:, ::-1]
    return finish(element, image)


def finish(element, image) -> dict:
  """The output dict; finite-mode padding ("_valid") becomes "mask"."""
  out = {"image": np.ascontiguousarray(image, dtype=np.float32),
         "label": np.int32(element["label"])}
  if "_valid" in element:
    out["mask"] = np.bool_(element["_valid"])
  return out
