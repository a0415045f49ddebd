"""Image folders -> array_record data sets (name="folder", path=...).

`build(src, out, ...)` (run through `python -m kflow_jax.tools.build_dataset`)
converts a directory of JPEG/PNG files once into our array_record format
(records.py), so users' own images go through the same fast path as
everything else: random access, global shuffle, exact resume.

Layout of src: either class subfolders (src/<class>/.../*.png, labels are
the sorted folder names' indices) or images directly in src (label 0).

Storage: with image_size set, images are center-cropped (ADM) at build time
and stored as raw uint8 [S, S, C] (no decode at train time: the fast path);
without it the original file bytes are stored and decoded + cropped in
grain's map step, so one build serves several resolutions.
"""
import concurrent.futures
import os
from typing import Optional

from absl import logging
import numpy as np
from PIL import Image

from kflow_jax.data import base
from kflow_jax.data import preprocess
from kflow_jax.data import records

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _images_under(directory: str, recursive: bool) -> list:
  if not recursive:
    return sorted(
        os.path.join(directory, f) for f in os.listdir(directory)
        if f.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(directory, f)))
  found = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    found.extend(os.path.join(root, f) for f in sorted(files)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  return found


def scan(src: str):
  """Returns (files, labels int32, class_names) of an image folder."""
  if not os.path.isdir(src):
    raise ValueError(f"--src={src!r} is not a directory of images.")
  top = _images_under(src, recursive=False)
  class_dirs = sorted(d for d in os.listdir(src)
                      if os.path.isdir(os.path.join(src, d))
                      and _images_under(os.path.join(src, d), True))
  if top and class_dirs:
    raise ValueError(
        f"{src} holds both images and class subfolders {class_dirs[:5]}; "
        "put every image in a class subfolder, or all directly in src.")
  if class_dirs:
    files, labels = [], []
    for label, d in enumerate(class_dirs):
      found = _images_under(os.path.join(src, d), True)
      files += found
      labels += [label] * len(found)
    return files, np.asarray(labels, np.int32), class_dirs
  if not top:
    raise ValueError(
        f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {src} or its "
        "subfolders.")
  return top, np.zeros(len(top), np.int32), []


class _Loader:
  """File -> record; checks every file decodes, so errors surface now."""

  def __init__(self, image_size: Optional[int], crop: str, channels: int):
    self.image_size = image_size
    self.crop = crop
    self.channels = channels

  def __call__(self, item):
    path, label = item
    with open(path, "rb") as f:
      data = f.read()
    try:
      image = preprocess.decode_image(data)
    except Exception as e:  # PIL raises several types for bad files.
      raise ValueError(f"cannot decode image {path}: {e}") from e
    if self.image_size is None:
      return {"image": data, "label": int(label)}
    image = preprocess.fit_image(image, self.image_size, self.crop,
                                 self.channels)
    return {"image": image, "label": int(label)}


def build(src: str, out: str, *, image_size: Optional[int] = None,
          crop: str = "center", channels: int = 3, eval_fraction: float = 0.0,
          seed: int = 0, examples_per_shard: int = 10000,
          num_threads: int = 4, name: str = "") -> dict:
  """Converts an image folder into an array_record data set; returns info."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}.")
  if not 0.0 <= eval_fraction < 1.0:
    raise ValueError(
        f"eval_fraction must be in [0, 1), got {eval_fraction}.")
  if crop not in preprocess.CROP_MODES:
    raise ValueError(
        f"crop must be one of {preprocess.CROP_MODES}, got {crop!r}.")
  files, labels, class_names = scan(src)
  os.makedirs(out, exist_ok=True)
  # Deterministic split by a seeded permutation; each split keeps file order
  # so the data set is reproducible from (src, seed).
  order = np.random.default_rng(seed).permutation(len(files))
  num_eval = int(round(eval_fraction * len(files)))
  split_indices = {"train": np.sort(order[num_eval:])}
  if num_eval:
    split_indices["test"] = np.sort(order[:num_eval])
  loader = _Loader(image_size, crop, channels)
  splits = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for split, idx in split_indices.items():
      items = [(files[i], labels[i]) for i in idx]
      n = len(items)
      every = max(1, n // 20)
      def progress(k, split=split, n=n, every=every):
        if k % every == 0 or k == n:
          logging.info("build_dataset %s: %d/%d images", split, k, n)
      splits[split] = records.write_split(
          out, split, pool.map(loader, items), n,
          num_shards=-(-n // examples_per_shard), progress=progress)
  return records.write_info(
      out, "images", splits, num_classes=max(1, len(class_names)),
      class_names=class_names, image_size=image_size, channels=channels,
      encoding="raw" if image_size else "file", source=os.path.abspath(src),
      name=name or os.path.basename(os.path.abspath(src)))


def make_test_folder(root: str, num_classes: int = 2, per_class: int = 6,
                     size=(40, 48), seed: int = 0) -> str:
  """Writes a small class-folder of PNGs (for tests and CPU demos).

  Class k images are smooth colour gradients with a class-specific hue plus
  noise, in non-square sizes so cropping is exercised. Returns root.
  """
  rng = np.random.default_rng(seed)
  h, w = size
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  for k in range(num_classes):
    d = os.path.join(root, f"class_{k}")
    os.makedirs(d, exist_ok=True)
    hue = np.array([np.cos(2 * np.pi * k / num_classes),
                    np.sin(2 * np.pi * k / num_classes), 0.5])
    for i in range(per_class):
      img = (0.5 + 0.4 * hue * (yy[..., None] + xx[..., None] - 1)
             + 0.05 * rng.standard_normal((h, w, 3)))
      img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
      Image.fromarray(img).save(os.path.join(d, f"img_{i:03d}.png"))
  return root


# ----------------------------------------------------------- the family


def _resolve(cfg, split):
  path = cfg.path
  info = records.read_info(path, "images", "folder")
  size = cfg.image_size or info.get("image_size")
  if not size:
    raise ValueError(
        f"the folder data set at {path} stores original files; set "
        "config.input.image_size (or rebuild with --image_size).")
  records.split_entry(info, split, path)
  return path, info, int(size)


def _info(cfg, split):
  path, info, size = _resolve(cfg, split)
  return base.DatasetInfo((size, size, info["channels"]), info["num_classes"],
                          info["splits"][split]["num_examples"])


def _prepare(cfg, split, train):
  path, info, size = _resolve(cfg, split)
  source = records.open_split(path, info, split)
  flip = train and base.resolve_flip(cfg, FOLDER)
  transform = preprocess.ImagePreprocess(
      size, info["channels"], cfg.crop, flip)
  return base.Prepared(source, transform, _info(cfg, split))


FOLDER = base.Family(_info, _prepare, default_size=None, default_flip=True)
