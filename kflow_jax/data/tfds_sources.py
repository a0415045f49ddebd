"""TFDS data sets read through `tfds.data_source` (array_record, no TF).

The data set must be prepared once, as array_record, in config.input.data_dir
(local or gs://; None: $TFDS_DATA_DIR or ~/tensorflow_datasets). Before any
tfds call we look for the prepared directory ourselves and, when it is not
there, raise an error naming the data set, the directory searched and the
command (or manual-download page) that prepares it: tfds is never allowed to
download, so a missing data set can not turn into minutes of network
retries.

Records from tfds come decoded (uint8 [H, W, C]); cropping to the model
size (ADM center crop), flipping and scaling run in grain's map step.
"""
import functools
import os
from typing import NamedTuple, Optional

from etils import epath
import numpy as np

from kflow_jax.data import base
from kflow_jax.data import preprocess


class TfdsSpec(NamedTuple):
  """How one of our data set names maps onto TFDS."""
  tfds_name: str           # TFDS name with config, e.g. "celeb_a_hq/256"
  default_size: Optional[int]
  default_flip: bool
  eval_split: str          # split read by create(split="eval")
  manual_url: str = ""     # set when TFDS needs a manual download


_CATALOG = "https://www.tensorflow.org/datasets/catalog/"

SPECS = {
    "cifar10": TfdsSpec("cifar10", 32, True, "test"),
    "mnist": TfdsSpec("mnist", 32, False, "test"),
    "celeb_a": TfdsSpec("celeb_a", 64, True, "test"),
    "imagenet2012": TfdsSpec("imagenet2012", 256, True, "validation",
                             _CATALOG + "imagenet2012"),
    # celeb_a_hq has no test split; LFM/K-Flow train on all 30k at 256.
    "celeb_a_hq": TfdsSpec("celeb_a_hq/256", 256, True, "train",
                           _CATALOG + "celeb_a_hq"),
    "lsun/church_outdoor": TfdsSpec("lsun/church_outdoor", 256, True,
                                    "validation"),
    # Any other prepared TFDS image data set: config.input.tfds_name.
    "tfds": TfdsSpec("", None, False, "test"),
}


def data_dir(cfg) -> str:
  """config.input.data_dir, or where TFDS looks by default."""
  d = cfg.data_dir
  if d:
    return str(d)
  return os.environ.get("TFDS_DATA_DIR",
                        os.path.expanduser("~/tensorflow_datasets"))


def _tfds_name(cfg, name: str) -> str:
  tfds_name = cfg.tfds_name or SPECS[name].tfds_name
  if not tfds_name:
    raise ValueError(
        "config.input.name='tfds' needs config.input.tfds_name, the TFDS "
        "name (with config if any) of a prepared data set, e.g. "
        "'oxford_flowers102' or 'celeb_a_hq/128'.")
  return tfds_name


def _prepare_hint(name: str, tfds_name: str, directory: str) -> str:
  spec = SPECS[name]
  build = (f"tfds build {tfds_name} --data_dir={directory} "
           "--file_format=array_record")
  if spec.manual_url:
    return (f"It needs a manual download: follow {spec.manual_url} to put "
            f"the archives into {directory}/downloads/manual/, then run "
            f"`{build}`")
  return f"Prepare it once with `{build}`"


def check_prepared(name: str, tfds_name: str, directory: str):
  """Raises a clear ValueError unless tfds_name is prepared in directory.

  A prepared TFDS data set is <dir>/<name>[/<config>]/<version>/ with a
  dataset_info.json. Looking for that file is all we do: no tfds call, so
  no download attempt and no network retries.
  """
  root = epath.Path(directory) / tfds_name
  found = list(root.glob("*/dataset_info.json")) if root.exists() else []
  if not found:
    raise ValueError(
        f"data set {name!r} (TFDS {tfds_name!r}) is not prepared: no "
        f"{root}/<version>/dataset_info.json (searched config.input.data_dir"
        f"={directory!r}). {_prepare_hint(name, tfds_name, directory)}; then "
        "set config.input.data_dir to that directory.")


@functools.lru_cache(maxsize=16)
def _builder_facts(tfds_name: str, directory: str):
  """(channels, num_classes, has_label) from the prepared builder's info."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(tfds_name, data_dir=directory)
  features = builder.info.features
  if "image" not in features:
    raise ValueError(
        f"TFDS data set {tfds_name!r} has no 'image' feature (features: "
        f"{sorted(features)}); only image data sets are supported.")
  channels = features["image"].shape[-1] or 3
  has_label = "label" in features and hasattr(features["label"],
                                              "num_classes")
  num_classes = features["label"].num_classes if has_label else 1
  return int(channels), int(num_classes), has_label


def _open(tfds_name: str, split: str, directory: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # download=False: never let tfds fetch anything; check_prepared ran.
  return tfds.data_source(tfds_name, split=split, data_dir=directory,
                          download=False)


def _eval_split(name, split):
  # "test" is the config default; data sets without a test split map it to
  # their own held-out split.
  if split == "test" and SPECS[name].eval_split != "test":
    return SPECS[name].eval_split
  return split


class TfdsRecords:
  """Keeps "image" and "label" of each tfds record (0 when unlabelled).

  Picklable: tfds' ArrayRecordDataSource is, so grain workers can use it.
  """

  def __init__(self, source, has_label: bool):
    self._source = source
    self._has_label = has_label

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    record = self._source[index]
    label = int(record["label"]) if self._has_label else 0
    return {"image": np.asarray(record["image"]), "label": label}


def _resolve(cfg, name, split):
  tfds_name = _tfds_name(cfg, name)
  directory = data_dir(cfg)
  check_prepared(name, tfds_name, directory)
  return tfds_name, directory, _eval_split(name, split)


def make_family(name: str) -> base.Family:
  """The Family reading TFDS data set `name` (a key of SPECS)."""
  spec = SPECS[name]

  def info(cfg, split):
    tfds_name, directory, split = _resolve(cfg, name, split)
    size = base.resolve_size(cfg, family, name)
    channels, num_classes, _ = _builder_facts(tfds_name, directory)
    num_examples = len(_open(tfds_name, split, directory))
    return base.DatasetInfo((size, size, channels), num_classes,
                            num_examples)

  def prepare(cfg, split, train):
    tfds_name, directory, split = _resolve(cfg, name, split)
    size = base.resolve_size(cfg, family, name)
    channels, num_classes, has_label = _builder_facts(tfds_name, directory)
    source = TfdsRecords(_open(tfds_name, split, directory), has_label)
    flip = train and base.resolve_flip(cfg, family)
    transform = preprocess.ImagePreprocess(
        size, channels, cfg.crop, flip)
    info = base.DatasetInfo((size, size, channels), num_classes, len(source))
    return base.Prepared(source, transform, info)

  family = base.Family(info, prepare, spec.default_size, spec.default_flip)
  return family


FAMILIES = {name: make_family(name) for name in SPECS}
