r"""Input pipeline throughput (images/s, 1 process) on the array_record path.

    python benchmarks/input.py [--batches=30] [--num_workers=0]
    python benchmarks/input.py --quick     # one small case (seconds)

Writes synthetic array_record data sets (in a temp dir) in the format that
build_dataset produces, at 32x32 and 256x256, stored raw (pre-cropped:
the fast path) and as JPEG files (decoded + ADM-cropped in the map step),
then reads them through input_pipeline.create in training mode (shuffle,
flip, scale to [-1, 1]) and prints images/s after one warm-up batch.
"""
import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from kflow_jax import config_lib  # pylint: disable=g-import-not-at-top
from kflow_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
from kflow_jax.data import records  # pylint: disable=g-import-not-at-top


def _smooth_images(rng, n, size):
  """Random low-frequency images (JPEG sizes like photos, unlike noise)."""
  small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  return [np.asarray(Image.fromarray(s).resize((size, size), Image.BICUBIC))
          for s in small]


def write_synthetic(out, n, size, encoding, seed=0):
  rng = np.random.default_rng(seed)
  images = _smooth_images(rng, n, size)
  def gen():
    for i, img in enumerate(images):
      if encoding == "jpeg":
        # Originals a bit larger than the target, as real photos are.
        big = Image.fromarray(img).resize((size * 5 // 4, size))
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=90)
        yield {"image": buf.getvalue(), "label": i % 10}
      else:
        yield {"image": img, "label": i % 10}
  split = records.write_split(out, "train", gen(), n)
  records.write_info(out, "images", {"train": split}, num_classes=10,
                     class_names=[str(i) for i in range(10)],
                     image_size=size if encoding == "raw" else None,
                     channels=3, encoding="raw" if encoding == "raw"
                     else "file", source="synthetic", name="synthetic")


def measure(path, size, batch_size, batches, num_workers, num_threads):
  cfg = config_lib.base().input
  cfg.update(name="folder", path=path, image_size=size,
             num_workers=num_workers, num_threads=num_threads)
  it = input_pipeline.create(cfg, global_batch_size=batch_size, seed=0)
  next(it)  # warm-up: opens files, starts threads/workers
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  elapsed = time.perf_counter() - start
  assert batch["image"].shape == (batch_size, size, size, 3)
  return batches * batch_size / elapsed


# (size, storage, batch, examples written); quick: both code paths, small.
CASES = [(32, "raw", 256, 4096), (256, "raw", 32, 512),
         (256, "jpeg", 32, 512)]
QUICK_CASES = [(32, "raw", 64, 256), (64, "jpeg", 16, 64)]


def main(argv=None):
  """Prints the table and returns its rows as dicts."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--num_workers", type=int, default=0)
  parser.add_argument("--num_threads", type=int, default=2)
  parser.add_argument("--quick", action="store_true",
                      help="small cases, 3 batches (smoke run)")
  args = parser.parse_args(argv)
  cases = QUICK_CASES if args.quick else CASES
  batches = 3 if args.quick else args.batches
  rows = []
  print(f"input pipeline, 1 process, num_workers={args.num_workers}, "
        f"num_threads={args.num_threads}, {os.cpu_count()} CPUs")
  print(f"{'size':>6} {'storage':>8} {'batch':>6} {'images/s':>10} "
        f"{'MB/s':>8}")
  with tempfile.TemporaryDirectory() as tmp:
    for size, encoding, batch_size, n in cases:
      path = os.path.join(tmp, f"{size}_{encoding}")
      os.makedirs(path)
      write_synthetic(path, n, size, encoding)
      rate = measure(path, size, batch_size, batches, args.num_workers,
                     args.num_threads)
      mbs = rate * size * size * 3 * 4 / 1e6  # float32 output bytes
      print(f"{size:>6} {encoding:>8} {batch_size:>6} {rate:>10.0f} "
            f"{mbs:>8.1f}")
      rows.append({"size": size, "storage": encoding, "batch": batch_size,
                   "images_per_s": round(rate, 1), "mb_per_s": round(mbs, 2)})
  return rows


if __name__ == "__main__":
  main()
