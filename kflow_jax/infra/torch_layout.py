"""Tensor layouts between PyTorch state dicts and flax params.

PyTorch stores convolution kernels OIHW and linear weights [out, in];
flax stores HWIO and [in, out]. Both weight importers (the SD-VAE from
diffusers, the FID Inception from pytorch-fid) and their exporters go
through these two functions, so the layout rule lives in one place.
"""
from typing import Callable

import flax
import numpy as np


def to_flax(value, target_shape: tuple, name: str, what: str) -> np.ndarray:
  """One torch tensor -> the flax layout of `target_shape` (float32).

  A 1x1 conv stored where flax has a dense layer (old diffusers attention
  files) is squeezed. `what` ends the error message: which file or model
  the tensor should have come from.
  """
  value = np.asarray(value, np.float32)
  if value.ndim == 4:  # conv OIHW -> HWIO
    value = np.transpose(value, (2, 3, 1, 0))
    if len(target_shape) == 2:
      value = value.reshape(value.shape[2:])
  elif value.ndim == 2:  # linear [out, in] -> [in, out]
    value = value.T
  if tuple(value.shape) != tuple(target_shape):
    raise ValueError(
        f"tensor {name!r} has shape {tuple(value.shape)} after conversion "
        f"but the model expects {tuple(target_shape)}; {what}")
  return value


def to_torch_state_dict(variables, name_fn: Callable) -> dict:
  """flax variables -> torch-named numpy tensors (OIHW convs, [out, in]);
  name_fn maps a flax path tuple to the torch name."""
  out = {}
  for path, value in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables)).items():
    value = np.asarray(value, np.float32)
    if value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 2:
      value = value.T
    out[name_fn(path)] = np.ascontiguousarray(value)
  return out
