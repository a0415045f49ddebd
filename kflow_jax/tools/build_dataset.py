r"""Converts a folder of images into an array_record data set.

    python -m kflow_jax.tools.build_dataset --src=/data/my_images \
        --out=/data/my_images_ar --image_size=64 --eval_fraction=0.05

Then train with config.input.name="folder", config.input.path=<out>.
src holds either class subfolders (src/<class>/*.jpg; labels follow the
sorted folder names) or images directly (label 0). With --image_size the
images are center-cropped (ADM) and stored raw (fastest to read); without
it the original files are stored and cropped at read time.
"""
from absl import app
from absl import flags
from absl import logging

from kflow_jax.data import folder

_SRC = flags.DEFINE_string("src", None, "Directory of images.")
_OUT = flags.DEFINE_string("out", None, "Output data set directory.")
_NAME = flags.DEFINE_string(
    "name", "", "Data set name stored in dataset_info.json (for humans).")
_SIZE = flags.DEFINE_integer(
    "image_size", None, "Store center-cropped SxS images (None: originals).")
_CROP = flags.DEFINE_enum("crop", "center", ["center", "resize"],
                          "center: ADM center crop; resize: squash.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "3 (RGB) or 1 (grey).")
_EVAL = flags.DEFINE_float(
    "eval_fraction", 0.0, "Fraction held out as the 'test' split.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/test split.")
_PER_SHARD = flags.DEFINE_integer(
    "examples_per_shard", 10000, "Records per array_record file.")
_THREADS = flags.DEFINE_integer("num_threads", 4, "Decode threads.")


def main(argv):
  del argv
  if not _SRC.value or not _OUT.value:
    raise app.UsageError("--src and --out are required.")
  info = folder.build(
      _SRC.value, _OUT.value, image_size=_SIZE.value, crop=_CROP.value,
      channels=_CHANNELS.value, eval_fraction=_EVAL.value, seed=_SEED.value,
      examples_per_shard=_PER_SHARD.value, num_threads=_THREADS.value,
      name=_NAME.value)
  counts = {s: v["num_examples"] for s, v in info["splits"].items()}
  logging.info("wrote %s: %s, %d classes", _OUT.value, counts,
               info["num_classes"])
  print(f"wrote {_OUT.value}: splits {counts}, {info['num_classes']} classes")


if __name__ == "__main__":
  app.run(main)
