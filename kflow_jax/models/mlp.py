"""A small MLP velocity field for 2-D toy data, tiny images and unit tests.

Input [B, H, W, C] is flattened (or [B, D] taken as is); the time and class
embeddings are added after the first layer; the output has the input's
shape. The input size is fixed at init (unlike DiT/U-Net).
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from kflow_jax.models import layers
from kflow_jax.models import text as text_lib

# name -> (hidden, depth).
SIZES = {"mu": (32, 2), "ti": (64, 3), "S": (256, 4), "B": (512, 4)}


class MLP(nn.Module):
  """Residual-free MLP v(x, t, y); see `models.get("mlp", ...)`.

  Attributes:
    size: preset in SIZES; hidden and depth override it.
    num_classes: 0 = unconditional; row num_classes is the null class.
    time_scale: t in [0, 1] is multiplied by this before the sinusoid.
  """
  size: str = "S"
  hidden: Optional[int] = None
  depth: Optional[int] = None
  num_classes: int = 0
  # Condition slots (flow/slots.py), set by the run from config.cond:
  # their number, kinds (models/text.py; () = every slot a class) and the
  # text encoder of token slots.
  num_slots: int = 1
  slot_kinds: tuple = ()
  text: Optional[text_lib.TextSpec] = None
  freeze_encoder: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  time_scale: float = 1000.0

  def __post_init__(self):
    if self.size not in SIZES:
      raise ValueError(
          f"Unknown MLP size {self.size!r}; valid sizes: {list(SIZES)}.")
    layers.check_positive_ints("hidden/depth", self.dims)
    layers.check_head(self.num_classes, self.dtype)
    text_lib.check_slots(self.num_slots, self.slot_kinds, self.text)
    super().__post_init__()

  @property
  def dims(self):
    h, d = SIZES[self.size]
    return (self.hidden or h, self.depth or d)

  @nn.compact
  def __call__(self, x, t, y=None, train=False):
    del train
    layers.check_xt(x, t, min_ndim=2)
    layers.label_shape_check(y, x.shape[0], self.num_classes,
                             self.num_slots, text_lib.max_tokens(self))
    hidden, depth = self.dims
    dt = layers.resolve_dtype(self.dtype)
    pdt = self.param_dtype
    b = x.shape[0]
    flat = x.reshape(b, -1).astype(dt)

    h = layers.dense(hidden, ("conv_in", "embed"), dtype=dt, param_dtype=pdt,
                     name="in")(flat)
    h = h + layers.TimestepEmbedder(hidden, freq_dim=64,
                                    time_scale=self.time_scale, dtype=dt,
                                    param_dtype=pdt, name="t_embedder")(t)
    if self.num_classes:
      h = h + text_lib.embedder(self, hidden, pdt)(y, b).astype(dt)
    for i in range(depth):
      h = layers.dense(hidden, ("mlp", "embed"), dtype=dt, param_dtype=pdt,
                       name=f"hidden_{i}")(nn.silu(h))
    out = layers.dense(flat.shape[-1], ("embed", "conv_in"), dtype=dt,
                       param_dtype=pdt, name="out")(nn.silu(h))
    return out.reshape(x.shape).astype(jnp.float32)
