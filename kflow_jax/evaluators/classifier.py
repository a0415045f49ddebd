"""A small CNN classifier of a labelled data set, for download-free metrics.

The "MNIST-FID practice": where no Inception network fits the data (8x8 or
16x16 digits), a classifier trained on the data set's own labels supplies
the features of a Frechet distance (its penultimate layer) and judges
conditional samples (does a sample asked to be a 3 look like a 3?).

    # once: python -m kflow_jax.tools.train_classifier --dataset=digits \
    #           --out=/tmp/digits_classifier.npz
    clf = classifier.load("/tmp/digits_classifier.npz", dataset="digits",
                          image_shape=(16, 16, 1))
    fd = classifier.frechet_distance(clf, samples, reference)
    acc = classifier.class_accuracy(clf, samples, requested_labels)

The network has no batch norm or dropout, so features are a pure function
of (params, image): the same file gives the same numbers everywhere.
Weights live in a .npz with the metadata that `load` checks (data set,
image shape, classes, architecture) plus the held-out accuracy.
"""
import dataclasses
import functools
import os
from typing import Optional, Sequence

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import validate

FORMAT_VERSION = 1
# Batch of the feature pass; a fixed size so jit compiles once per shape.
_EVAL_BATCH = 256


def tool_command(dataset: str, path: str) -> str:
  """The shell command that writes a classifier file (for error messages)."""
  return (f"python -m kflow_jax.tools.train_classifier --dataset={dataset} "
          f"--out={path}")


class CNN(nn.Module):
  """Two conv blocks (conv-relu-conv-relu-avgpool), a dense feature layer.

  Returns (logits [N, num_classes], features [N, feature_dim]); features
  are the ReLU activations feeding the logits (the penultimate layer).
  """
  num_classes: int
  widths: Sequence[int] = (16, 32)
  feature_dim: int = 64

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3, 3), name=f"conv{i}a")(x))
      x = nn.relu(nn.Conv(w, (3, 3), name=f"conv{i}b")(x))
      # Halve while the map is large; 8x8 inputs keep a 2x2 map at the end.
      if x.shape[1] > 2 and x.shape[2] > 2:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    features = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
    logits = nn.Dense(self.num_classes, name="logits")(features)
    return logits, features


@dataclasses.dataclass(frozen=True)
class Classifier:
  """Trained weights and what they were trained for.

  Attributes:
    params: flax params of CNN.
    dataset: data set name the labels come from (config.input.name).
    image_shape: (H, W, C) of the inputs.
    num_classes: number of labels.
    widths, feature_dim: the CNN architecture.
    accuracy: fraction correct on the data set's held-out split.
    steps, seed: how it was trained.
  """
  params: dict
  dataset: str
  image_shape: tuple
  num_classes: int
  widths: tuple = (16, 32)
  feature_dim: int = 64
  accuracy: float = float("nan")
  steps: int = 0
  seed: int = 0

  @property
  def module(self) -> CNN:
    return CNN(self.num_classes, tuple(self.widths), self.feature_dim)

  def _outputs(self, images):
    x = validate.images(images)
    if x.shape[1:] != tuple(self.image_shape):
      raise ValueError(
          f"the classifier was trained on images {tuple(self.image_shape)} "
          f"of {self.dataset!r} but got images {x.shape[1:]}; train one for "
          f"this shape: {tool_command(self.dataset, 'PATH.npz')} "
          f"--image_size={x.shape[1]}.")
    apply = _jitted_apply(self.module)
    n = x.shape[0]
    pad = (-n) % _EVAL_BATCH
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    logits, feats = [], []
    for start in range(0, x.shape[0], _EVAL_BATCH):
      lg, ft = apply(self.params, x[start:start + _EVAL_BATCH])
      logits.append(np.asarray(lg))
      feats.append(np.asarray(ft))
    return np.concatenate(logits)[:n], np.concatenate(feats)[:n]

  def logits(self, images) -> np.ndarray:
    """float32 [N, num_classes]."""
    return self._outputs(images)[0]

  def features(self, images) -> np.ndarray:
    """float32 [N, feature_dim]: the penultimate (ReLU) layer."""
    return self._outputs(images)[1]

  def predict(self, images) -> np.ndarray:
    """int32 [N]: the most likely label."""
    return np.argmax(self.logits(images), axis=-1).astype(np.int32)


@functools.lru_cache(maxsize=8)
def _jitted_apply(module: CNN):
  return jax.jit(module.apply)


# ------------------------------------------------------------------ metrics


def class_accuracy(clf: Classifier, images, labels) -> float:
  """Fraction of images the classifier assigns to the requested label."""
  y = np.asarray(labels)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(
        f"labels must be a 1-D int array, got {y.dtype} {y.shape}.")
  if len(y) != len(images):
    raise ValueError(
        f"{len(images)} images but {len(y)} labels; pass the label each "
        "sample was asked to be.")
  if y.size and (y.min() < 0 or y.max() >= clf.num_classes):
    raise ValueError(
        f"labels must lie in [0, {clf.num_classes}) (the classifier's "
        f"classes); got range [{y.min()}, {y.max()}]. The null class of "
        "classifier-free guidance is not a class to score.")
  return float(np.mean(clf.predict(images) == y))


def frechet_distance(clf: Classifier, images_a, images_b) -> float:
  """Classifier Frechet distance between two image sets (N >= 2 each)."""
  return frechet.frechet_from_features(clf.features(images_a),
                                       clf.features(images_b))


# ----------------------------------------------------------------- training


def _shift(images: np.ndarray, rng: np.random.Generator,
           max_shift: int) -> np.ndarray:
  """Random integer translations by up to max_shift pixels (edge padded).

  Generated samples are rarely centred exactly like the data; a classifier
  that is not tolerant of a one-pixel shift would read that as a class or
  feature change.
  """
  if max_shift == 0:
    return images
  n, h, w, _ = images.shape
  p = max_shift
  padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
  dy, dx = rng.integers(0, 2 * p + 1, size=(2, n))
  rows = dy[:, None] + np.arange(h)[None]  # [n, h]
  cols = dx[:, None] + np.arange(w)[None]  # [n, w]
  return padded[np.arange(n)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def init_params(module: CNN, image_shape, rng: np.random.Generator) -> dict:
  """He-normal kernels, zero biases, drawn on the host with numpy.

  Shapes come from jax.eval_shape (tracing only): flax's own init compiles
  a threefry program per run, which cost more CPU time than the whole
  training here, and numpy's PCG64 stream does not depend on the jax
  version.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1,) + tuple(image_shape)))["params"]

  def leaf(path, s):
    if path[-1].key == "bias":
      return np.zeros(s.shape, np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)).astype(
        np.float32)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def train(train_images, train_labels, *, num_classes: int, steps: int = 1000,
          batch_size: int = 64, learning_rate: float = 2e-3,
          weight_decay: float = 1e-4, max_shift: int = 1, seed: int = 0,
          widths: Sequence[int] = (16, 32), feature_dim: int = 64) -> dict:
  """Trains CNN params with AdamW (cosine-decayed); returns the params.

  Deterministic given the arguments: init, batch draws (with replacement)
  and shifts all come from np.random.default_rng(seed).
  """
  x = validate.images(train_images, "train_images", min_count=batch_size)
  y = np.asarray(train_labels, np.int32)
  if y.shape != (x.shape[0],):
    raise ValueError(
        f"train_labels must be [{x.shape[0]}] (one per image), got {y.shape}.")
  if int(steps) < 1:
    raise ValueError(f"steps must be >= 1, got {steps}.")
  module = CNN(int(num_classes), tuple(widths), int(feature_dim))
  rng = np.random.default_rng(int(seed))
  params = init_params(module, x.shape[1:], rng)
  schedule = optax.cosine_decay_schedule(learning_rate, int(steps))
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  opt_state = tx.init(params)

  # A Python loop over one jitted step: XLA:CPU ran convolutions inside a
  # lax.scan body far slower (measured ~10x) than as a top-level program.
  @jax.jit
  def step(params, opt_state, xb, yb):
    def loss_fn(p):
      logits, _ = module.apply({"params": p}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, yb).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(int(steps)):
    idx = rng.integers(0, x.shape[0], size=batch_size)
    params, opt_state = step(params, opt_state,
                             _shift(x[idx], rng, max_shift), y[idx])
  return {"params": jax.tree.map(np.asarray, params)}


def fit(dataset: str, *, image_size: Optional[int] = None, steps: int = 1000,
        seed: int = 0, widths: Sequence[int] = (16, 32),
        feature_dim: int = 64, **train_kwargs) -> Classifier:
  """Trains on the data set's train split, scores its held-out split.

  Args:
    dataset: config.input.name of a labelled data set with a held-out split
      of the same classes (digits; mnist/cifar10 where prepared).
    image_size: config.input.image_size; None: the data set's default.
    steps, seed, widths, feature_dim, **train_kwargs: see `train`.
  """
  from kflow_jax.evaluators import reference  # pylint: disable=g-import-not-at-top
  if dataset == "natural_patches":
    raise ValueError(
        "natural_patches labels are source photos and its default held-out "
        "split holds other photos, so a label classifier cannot be scored; "
        "use the label-free random-feature FD (evaluators.random_features), "
        "or, split by region (config.input.patch_split='regions'), the "
        "photo judges of evaluators/patch_judges.py.")
  x_train, y_train = reference.load_split(dataset, "train",
                                          image_size=image_size)
  x_test, y_test = reference.load_split(dataset, "test",
                                        image_size=image_size)
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  params = train(x_train, y_train, num_classes=num_classes, steps=steps,
                 seed=seed, widths=widths, feature_dim=feature_dim,
                 **train_kwargs)
  clf = Classifier(params=params, dataset=dataset,
                   image_shape=tuple(int(v) for v in x_train.shape[1:]),
                   num_classes=num_classes,
                   widths=tuple(int(w) for w in widths),
                   feature_dim=int(feature_dim), steps=int(steps),
                   seed=int(seed))
  acc = float(np.mean(clf.predict(x_test) == y_test))
  return dataclasses.replace(clf, accuracy=acc)


# ---------------------------------------------------------------- save/load


def save(path: str, clf: Classifier) -> str:
  """Writes the classifier to a .npz (write then rename); returns path."""
  flat = traverse_util.flatten_dict(clf.params, sep="/")
  arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
  arrays.update({
      "meta/format_version": np.asarray(FORMAT_VERSION),
      "meta/dataset": np.asarray(clf.dataset),
      "meta/image_shape": np.asarray(clf.image_shape, np.int64),
      "meta/num_classes": np.asarray(clf.num_classes),
      "meta/widths": np.asarray(clf.widths, np.int64),
      "meta/feature_dim": np.asarray(clf.feature_dim),
      "meta/accuracy": np.asarray(clf.accuracy, np.float64),
      "meta/steps": np.asarray(clf.steps),
      "meta/seed": np.asarray(clf.seed),
  })
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def load(path: str, dataset: Optional[str] = None,
         image_shape: Optional[Sequence[int]] = None) -> Classifier:
  """Reads a classifier .npz; checks it fits `dataset` and `image_shape`.

  Raises:
    ValueError: the file is missing, not a classifier file, or was trained
      for another data set or image shape; the message gives the command
      that writes the right one.
  """
  ds = dataset or "DATASET"
  if not os.path.exists(path):
    raise ValueError(
        f"no classifier file at {path!r}; train one with: "
        f"{tool_command(ds, path)}")
  with np.load(path, allow_pickle=False) as f:
    data = {k: f[k] for k in f.files}
  if "meta/format_version" not in data:
    raise ValueError(
        f"{path!r} is not a classifier file (no meta/format_version); "
        f"write one with: {tool_command(ds, path)}")
  if int(data["meta/format_version"]) != FORMAT_VERSION:
    raise ValueError(
        f"{path!r} has classifier format {int(data['meta/format_version'])}, "
        f"this code reads {FORMAT_VERSION}; retrain with: "
        f"{tool_command(ds, path)}")
  stored_ds = str(data["meta/dataset"])
  stored_shape = tuple(int(v) for v in data["meta/image_shape"])
  if dataset is not None and stored_ds != dataset:
    raise ValueError(
        f"{path!r} is a classifier of {stored_ds!r}, not {dataset!r}; train "
        f"one for {dataset!r} with: {tool_command(dataset, path)}")
  if image_shape is not None and tuple(int(v) for v in image_shape) != (
      stored_shape):
    raise ValueError(
        f"{path!r} was trained on images {stored_shape}, not "
        f"{tuple(image_shape)}; train one for this shape with: "
        f"{tool_command(stored_ds, path)} --image_size={image_shape[0]}")
  params = traverse_util.unflatten_dict(
      {k[len("params/"):]: v for k, v in data.items()
       if k.startswith("params/")}, sep="/")
  return Classifier(
      params=params, dataset=stored_ds, image_shape=stored_shape,
      num_classes=int(data["meta/num_classes"]),
      widths=tuple(int(v) for v in data["meta/widths"]),
      feature_dim=int(data["meta/feature_dim"]),
      accuracy=float(data["meta/accuracy"]), steps=int(data["meta/steps"]),
      seed=int(data["meta/seed"]))
