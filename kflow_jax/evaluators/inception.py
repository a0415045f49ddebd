"""The FID InceptionV3 in Flax, and the import of pytorch-fid's weights.

This is the 2015-12-05 TensorFlow Inception graph that every published FID,
sFID and Inception Score uses, in the form pytorch-fid ports it
(`pytorch_fid.inception.fid_inception_v3`): torchvision's Inception3 with
the TF graph's quirks, which torchvision lacks:

  * average pools in Mixed_5b-5d, 6b-6e and 7b exclude the zero padding
    from the count (TF's avg_pool; torch's count_include_pad=False);
  * Mixed_7c pools its fourth branch with a *max* pool (TF mixed_10);
  * BatchNorm epsilon 1e-3, running statistics only (eval mode);
  * the classifier has 1008 outputs.

Layers and parameters are named like the PyTorch state dict so each of its
472 tensors maps by name ("Mixed_6b.branch7x7_2.conv.weight" ->
params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"], OIHW -> HWIO; "bn"
weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var).

Images are NHWC and already preprocessed (299x299, values in [-1, 1]; see
`evaluators.preprocess`). The outputs are:

  pool              [N, 2048]  pool3, the FID features;
  spatial           [N, 2023]  sFID features: Mixed_6d.branch1x1 (TF
                               "mixed_6/conv"), first 7 channels, flattened
                               in NHWC order like the ADM evaluator;
  logits            [N, 1008]  fc(pool) with its bias, as torch's fc;
  logits_unbiased   [N, 1008]  pool @ fc.kernel without the bias: what the
                               ADM evaluator (and torch-fidelity) feed the
                               Inception Score.

Users download the weights themselves; nothing is fetched here:

    variables = inception.load_pytorch_fid_weights(path)
    out = inception.InceptionV3().apply(variables, x)
"""
import functools
import hashlib
import os
from typing import Dict, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.infra import torch_layout
from kflow_jax.evaluators import torch_pickle

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
               "fid_weights/" + WEIGHTS_FILENAME)
# torch.hub convention: the 8 hex digits in the name start the file's sha256.
WEIGHTS_SHA256_PREFIX = "6726825d"
# Where load_pytorch_fid_weights looks when given no path.
WEIGHTS_ENV = "KFLOW_INCEPTION_WEIGHTS"
DEFAULT_WEIGHTS_PATH = os.path.join("~", ".cache", "kflow_jax",
                                    WEIGHTS_FILENAME)
NUM_CLASSES = 1008
POOL_DIM = 2048
# sFID keeps the first 7 of Mixed_6d.branch1x1's 192 channels (ADM).
SPATIAL_CHANNELS = 7

# Convolutions run in full float32: JAX would otherwise use TF32 / bf16
# passes on GPUs and TPUs, which moves FID in the third decimal.
_PRECISION = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """torchvision BasicConv2d: conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""
  features: int
  kernel: tuple = (1, 1)
  strides: tuple = (1, 1)
  padding: tuple = (0, 0)  # (pad_h, pad_w), symmetric, as in torch

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=_PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool(x):
  # TF's 3x3/1 SAME average pool divides by the number of real pixels.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool(x, stride=1):
  pad = ((1, 1), (1, 1)) if stride == 1 else "VALID"
  return nn.max_pool(x, (3, 3), (stride, stride), pad)


class InceptionA(nn.Module):
  """Mixed_5b-5d (pytorch-fid FIDInceptionA)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, name="branch1x1")(x)
    b5 = BasicConv2d(48, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision InceptionB, unmodified)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), (2, 2), name="branch3x3")(x)
    bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), (2, 2), name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-6e (FIDInceptionC); returns (output, branch1x1 output)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, name="branch1x1")(x)
    b7 = BasicConv2d(c7, name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class InceptionD(nn.Module):
  """Mixed_7a (torchvision InceptionD, unmodified)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), (2, 2), name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), (2, 2), name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, avg pool) and Mixed_7c (E_2, max pool)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, name="branch1x1")(x)
    b3 = BasicConv2d(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
    ], axis=-1)
    bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
    ], axis=-1)
    # TF mixed_10 (Mixed_7c) max-pools here; pytorch-fid keeps that quirk.
    pooled = _max_pool(x) if self.max_pool else _avg_pool(x)
    bp = BasicConv2d(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID InceptionV3 on preprocessed NHWC images; returns a dict of features.

  See the module docstring for the outputs. Any input size >= 75 px runs
  (the network is convolutional up to the global pool), but only 299x299
  gives the published features and the 2023-d sFID vector.
  """

  @nn.compact
  def __call__(self, x) -> Dict[str, jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"InceptionV3 takes NHWC RGB images [N, H, W, 3], "
                       f"got shape {x.shape}.")
    x = x.astype(jnp.float32)
    x = BasicConv2d(32, (3, 3), (2, 2), name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x, 2)
    x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x, 2)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x, _ = InceptionC(128, name="Mixed_6b")(x)
    x, _ = InceptionC(160, name="Mixed_6c")(x)
    x, mixed_6_conv = InceptionC(160, name="Mixed_6d")(x)
    x, _ = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    fc = nn.Dense(NUM_CLASSES, precision=_PRECISION, name="fc")
    logits = fc(pool)
    # Same kernel, no bias: the ADM evaluator's IS logits.
    kernel = fc.variables["params"]["kernel"]
    logits_unbiased = jnp.dot(pool, kernel, precision=_PRECISION)
    spatial = mixed_6_conv[..., :SPATIAL_CHANNELS]
    return {"pool": pool,
            "spatial": spatial.reshape(spatial.shape[0], -1),
            "logits": logits,
            "logits_unbiased": logits_unbiased}


def variable_shapes(size: int = 299):
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs (no compute)."""
  return _variable_shapes(size)


@functools.lru_cache(maxsize=4)
def _variable_shapes(size):
  # Tracing the 94-conv model takes seconds; every import needs the shapes.
  return jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def random_variables(seed: int = 0) -> dict:
  """He-initialised weights and unit BatchNorm statistics (numpy), for tests
  and benchmarks: model.init at 299 px runs op by op and takes a minute."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variable_shapes()))
  out = {}
  for path, spec in flat.items():
    leaf = path[-1]
    if leaf == "kernel":
      fan_in = int(np.prod(spec.shape[:-1]))
      value = rng.normal(0, np.sqrt(2.0 / fan_in), spec.shape)
    elif leaf in ("scale", "var"):
      value = np.ones(spec.shape)
    else:  # bias, mean
      value = np.zeros(spec.shape)
    out[path] = value.astype(np.float32)
  return flax.traverse_util.unflatten_dict(out)


# ---------------------------------------------------------------------------
# pytorch-fid state dict <-> flax variables.

_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"),
              "running_var": ("batch_stats", "var")}


def torch_to_flax_path(name: str) -> Optional[tuple]:
  """'Mixed_5b.branch1x1.bn.running_var' -> ('batch_stats', 'Mixed_5b',
  'branch1x1', 'bn', 'var'); None for bookkeeping tensors
  (num_batches_tracked)."""
  *modules, leaf = name.split(".")
  if leaf == "num_batches_tracked":
    return None
  if modules and modules[-1] == "bn" and leaf in _BN_LEAVES:
    collection, leaf = _BN_LEAVES[leaf]
    return (collection, *modules, leaf)
  return ("params", *modules, "kernel" if leaf == "weight" else leaf)


def flax_to_torch_name(path: tuple) -> str:
  """Inverse of torch_to_flax_path."""
  collection, *modules, leaf = path
  if modules[-1] == "bn":
    leaf = {("params", "scale"): "weight", ("params", "bias"): "bias",
            ("batch_stats", "mean"): "running_mean",
            ("batch_stats", "var"): "running_var"}[(collection, leaf)]
  elif leaf == "kernel":
    leaf = "weight"
  return ".".join(modules + [leaf])


def _convert(value: np.ndarray, target_shape: tuple, name: str):
  return torch_layout.to_flax(
      value, target_shape, name,
      f"the file is not pytorch-fid's {WEIGHTS_FILENAME}.")


def convert_pytorch_fid_state_dict(state_dict: Dict[str, np.ndarray]) -> dict:
  """pytorch-fid FID Inception tensors (name -> array) -> flax variables.

  Every one of the 472 variables must be matched exactly once; missing and
  unexpected names are listed in the error.
  """
  targets = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variable_shapes()))
  paths = {name: torch_to_flax_path(name) for name in state_dict}
  paths = {name: p for name, p in paths.items() if p is not None}
  unexpected = sorted(name for name, p in paths.items() if p not in targets)
  found = set(paths.values())
  missing = sorted(flax_to_torch_name(p) for p in targets if p not in found)
  if missing or unexpected:
    raise ValueError(
        "weights do not match the FID Inception: "
        f"missing {len(missing)} {missing[:20]}; unexpected "
        f"{len(unexpected)} {unexpected[:20]}. Use pytorch-fid's "
        f"{WEIGHTS_FILENAME} ({WEIGHTS_URL}).")
  out = {p: _convert(state_dict[name], targets[p].shape, name)
         for name, p in paths.items()}
  return flax.traverse_util.unflatten_dict(out)


def to_pytorch_fid_state_dict(variables) -> Dict[str, np.ndarray]:
  """flax variables -> pytorch-fid-named numpy tensors (OIHW, [out, in])."""
  return torch_layout.to_torch_state_dict(variables, flax_to_torch_name)


def _missing_weights_message(path: str) -> str:
  return (
      f"no FID Inception weights at {path!r}. Download {WEIGHTS_FILENAME} "
      f"from {WEIGHTS_URL} (pytorch-fid's release) and put it at "
      f"{os.path.expanduser(DEFAULT_WEIGHTS_PATH)}, or set ${WEIGHTS_ENV} "
      "to its path, or pass it (--config.evals.inception_weights=PATH, "
      "tools: --weights=PATH, library: weights=PATH).")


def sha256_prefix(path: str, length: int = 8) -> str:
  """First `length` hex digits of the file's sha256 (torch.hub's check)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()[:length]


def default_weights_path() -> str:
  return os.path.expanduser(os.environ.get(WEIGHTS_ENV) or
                            DEFAULT_WEIGHTS_PATH)


def load_pytorch_fid_weights(path: Optional[str] = None,
                             check_hash: bool = True) -> dict:
  """Reads pytorch-fid's .pth (no torch needed) -> flax variables.

  Args:
    path: the file; default ${KFLOW_INCEPTION_WEIGHTS} or
      ~/.cache/kflow_jax/pt_inception-2015-12-05-6726825d.pth.
    check_hash: compare the file's sha256 with the 6726825d of its release
      name. Turn off for test files with other weights, or for a converted
      copy of the same weights (re-saved by another torch version, say),
      whose bytes and so its hash differ: --config.evals.check_weights_hash
      =False, tools' --nocheck_hash. Check the copy's features first (the
      parity tests of tests/inception_test.py show how).

  Returns:
    {'params': ..., 'batch_stats': ...} for InceptionV3().apply.
  """
  path = os.path.expanduser(str(path)) if path else default_weights_path()
  if not os.path.isfile(path):
    raise ValueError(_missing_weights_message(path))
  if check_hash:
    got = sha256_prefix(path)
    if got != WEIGHTS_SHA256_PREFIX:
      raise ValueError(
          f"{path} has sha256 {got}..., not {WEIGHTS_SHA256_PREFIX}... of "
          f"{WEIGHTS_FILENAME}: it is a different or damaged file. "
          f"Download it again from {WEIGHTS_URL}. A converted copy of the "
          "same weights (re-saved, so other bytes) is accepted without "
          "this check: --config.evals.check_weights_hash=False (tools: "
          "--nocheck_hash; library: check_hash=False); eval.json records "
          "its sha256.")
  return convert_pytorch_fid_state_dict(torch_pickle.load_state_dict(path))
