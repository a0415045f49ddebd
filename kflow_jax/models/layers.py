"""Layers shared by the velocity backbones: embeddings, attention, MLP.

Every parameter is created through `nn.with_logical_partitioning`, so it is
boxed (`nn.Partitioned`) with logical axis names; `models.LOGICAL_RULES` maps
those names to the mesh axes `data` / `fsdp`. Activations are annotated with
`nn.with_logical_constraint`, which is a no-op unless the caller sets
`nn.logical_axis_rules(...)` inside a mesh context, so the same code runs
unchanged on one device, under jit with shardings, or inside shard_map.

Parameters are float32 (`param_dtype`); matmuls run in `dtype` (bf16 on
accelerators); norms and the embeddings of t are computed in float32.
"""
import math
from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# Logical names of activation dims. "batch" and "embed" also name parameter
# dims; the rules give "batch" both data axes first, so an activation's embed
# dim stays replicated while a parameter's embed dim is FSDP-sharded.
TOKENS = ("batch", "length", "embed")
IMAGE = ("batch", "height", "width", "embed")


def check_head(num_classes, *dtypes) -> None:
  """The checks every backbone's __post_init__ shares: a label table size
  >= 0 (0 = unconditional) and dtypes that resolve."""
  if int(num_classes) < 0:
    raise ValueError(
        f"num_classes must be >= 0 (0 = unconditional), got {num_classes}.")
  for dtype in dtypes:
    resolve_dtype(dtype)


def resolve_dtype(dtype) -> jnp.dtype:
  """Accepts a jnp dtype or its name ("bfloat16", "float32", ...)."""
  try:
    dt = jnp.dtype(dtype)
  except TypeError:
    raise ValueError(
        f"dtype must be a floating dtype such as 'float32' or 'bfloat16', got "
        f"{dtype!r}.") from None
  if not jnp.issubdtype(dt, jnp.floating):
    raise ValueError(
        f"dtype must be a floating dtype such as 'float32' or 'bfloat16', got "
        f"{dtype!r}.")
  return dt


def constrain(x, names):
  return nn.with_logical_constraint(x, names)


def dense(features, names, *, dtype, param_dtype=jnp.float32, zero=False,
          kernel_init=None, use_bias=True, name=None):
  """nn.Dense whose kernel and bias carry logical axis names (in, out)."""
  if zero:
    kernel_init = nn.initializers.zeros_init()
  elif kernel_init is None:
    kernel_init = nn.initializers.xavier_uniform()
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init, names),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), (names[-1],)),
      name=name)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding of (scaled) times t [B] -> float32 [B, dim].

  Same layout as DiT/ADM (cos first, then sin), computed in float32 because
  t * 1000 in bf16 would lose the small time differences.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) *
                  jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def sincos_2d(height: int, width: int, dim: int, scale: float = 1.0,
              offset: float = 0.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding [height * width, dim] (MAE/DiT).

  Built with numpy from the grid the input actually has, so it is a
  compile-time constant and the backbone accepts any resolution. Token
  (i, j) is embedded at position (i * scale + offset, j * scale + offset);
  the defaults give the integer grid of MAE/DiT. Other values place a
  coarser grid's tokens in a finer grid's frame (see `Frame`).
  """
  if dim % 4:
    raise ValueError(
        f"sin-cos 2-D position embedding needs hidden size divisible by 4, "
        f"got {dim}; use pos_embed='learned' or a hidden size like "
        f"{dim - dim % 4 + 4}.")

  def one_axis(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  gh, gw = np.meshgrid(np.arange(height, dtype=np.float64) * scale + offset,
                       np.arange(width, dtype=np.float64) * scale + offset,
                       indexing="ij")
  # DiT uses the w grid for the first half (meshgrid(grid_w, grid_h)).
  emb = np.concatenate([one_axis(dim // 2, gw), one_axis(dim // 2, gh)], 1)
  return emb.astype(np.float32)


class Frame(NamedTuple):
  """Where the pixels of a smaller input sit on the full-resolution grid.

  Pixel n (each axis) of the input lies at full-resolution pixel
  n * factor + offset. The scale-adaptive runs (kflow_jax/flow/adaptive.py) feed
  a backbone a coarse grid of the image (bands 0..s on [H / f, W / f]); the
  frame lets the backbone give a coarse token the position of the
  full-resolution pixels it summarises, so one image region keeps its
  position embedding at every band. factor 1, offset 0 is the full grid.
  """
  factor: int = 1
  offset: float = 0.0

  def token_positions(self, patch: int) -> tuple:
    """(scale, offset) of the token grid in full-resolution token units
    (sincos_2d's arguments): token i covers input pixels i p .. i p + p - 1,
    whose centre is full pixel factor (i p + (p - 1) / 2) + offset, i.e.
    full token (that + 1/2) / p - 1/2."""
    f, p = int(self.factor), int(patch)
    return float(f), (f * (p - 1) / 2 + float(self.offset) + 0.5) / p - 0.5


def check_frame(frame, what: str) -> Optional[Frame]:
  """frame as a Frame (None stays None), or a clear ValueError."""
  if frame is None:
    return None
  if not isinstance(frame, Frame):
    try:
      frame = Frame(*frame)
    except TypeError:
      raise ValueError(f"{what}: frame must be layers.Frame(factor, offset) "
                       f"or None, got {frame!r}.") from None
  if isinstance(frame.factor, bool) or int(frame.factor) != frame.factor \
      or frame.factor < 1:
    raise ValueError(f"{what}: frame.factor must be an int >= 1, got "
                     f"{frame.factor!r}.")
  return Frame(int(frame.factor), float(frame.offset))


class TimestepEmbedder(nn.Module):
  """t in [0, 1] -> [B, hidden]: sinusoid of time_scale * t, then an MLP."""
  hidden: int
  freq_dim: int = 256
  time_scale: float = 1000.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t):
    emb = timestep_embedding(t * self.time_scale, self.freq_dim)
    init = nn.initializers.normal(0.02)
    h = dense(self.hidden, ("freq", "embed"), dtype=self.dtype,
              param_dtype=self.param_dtype, kernel_init=init)(emb)
    h = nn.silu(h)
    return dense(self.hidden, ("mlp", "embed"), dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=init)(h)


class LabelEmbedder(nn.Module):
  """Class labels -> [B, hidden]; row num_classes is the null class (CFG).

  y=None means "no label" and uses the null row for every example. Label
  dropout is not done here: the training step calls `models.drop_labels`.
  Labels cannot be range-checked under jit: y > num_classes gives NaN (a
  loud NaN loss, never a silent wrong row); y = -1 picks the null row, like
  numpy's negative index.
  """
  num_classes: int
  hidden: int
  param_dtype: Dtype = jnp.float32
  # Condition slots (flow/slots.py): y [B, K], slot k with its own
  # num_classes + 1 rows, the embeddings summed. 1: y [B], the table and
  # its initial values exactly as before slots existed.
  num_slots: int = 1

  @nn.compact
  def __call__(self, y, batch: int):
    k = int(self.num_slots)
    table = self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                     ("vocab", "embed")),
        ((self.num_classes + 1) * k, self.hidden), self.param_dtype)
    if y is None:
      y = jnp.full((batch,) + ((k,) if k > 1 else ()), self.num_classes,
                   jnp.int32)
    if k == 1:
      return jnp.take(table, y.astype(jnp.int32), axis=0)
    rows = y.astype(jnp.int32) + (self.num_classes + 1) * jnp.arange(k)
    return jnp.sum(jnp.take(table, rows, axis=0), axis=1)


def label_shape_check(y, batch: int, num_classes: int, num_slots: int = 1,
                      max_tokens: int = 0):
  """Trace-time check of y against the batch (values cannot be checked);
  max_tokens > 0: token slots (models/text.py), y [B, K, max_tokens]."""
  if y is None or num_classes == 0:
    return
  want = (batch,) if num_slots == 1 else (batch, num_slots)
  if max_tokens:
    want = (batch, num_slots, max_tokens)
  if tuple(y.shape) != want:
    what = ("" if num_slots == 1 else ", one per condition slot") + (
        ", a class at position 0 or a caption's tokens" if max_tokens else "")
    raise ValueError(
        f"y must be int labels of shape {list(want)} ([B]{what}), got "
        f"shape {tuple(y.shape)}; pass y=None for the null class.")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"y must be an integer array, got dtype {y.dtype}.")


def check_xt(x, t, min_ndim=4):
  if x.ndim < min_ndim:
    raise ValueError(
        f"x must be [B, H, W, C], got shape {tuple(x.shape)}; add the "
        "missing axes (e.g. x[..., None] for one channel).")
  if t.ndim != 1 or t.shape[0] != x.shape[0]:
    raise ValueError(
        f"t must be float times of shape [B]=[{x.shape[0]}], got shape "
        f"{tuple(jnp.shape(t))}.")


class Attention(nn.Module):
  """Multi-head self-attention on tokens [B, L, D].

  Uses jax.nn.dot_product_attention rather than a hand-written softmax:
  implementation=None lets jax pick (XLA on CPU); "cudnn" asks for the
  fused flash kernel on GPU where dtype and shapes allow.
  """
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: Optional[str] = None
  zero_proj: bool = False  # ADM starts residual attention at zero.

  @nn.compact
  def __call__(self, x):
    b, l, d = x.shape
    hd = d // self.num_heads
    qkv = dense(3 * d, ("embed", "qkv"), dtype=self.dtype,
                param_dtype=self.param_dtype, name="qkv")(x)
    qkv = qkv.reshape(b, l, 3, self.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = jax.nn.dot_product_attention(q, k, v,
                                       implementation=self.implementation)
    out = out.reshape(b, l, d)
    return dense(d, ("qkv", "embed"), dtype=self.dtype,
                 param_dtype=self.param_dtype, zero=self.zero_proj,
                 name="proj")(out)


class MlpBlock(nn.Module):
  """Transformer MLP: Dense -> GELU(tanh) -> Dense."""
  hidden: int
  out: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = dense(self.hidden, ("embed", "mlp"), dtype=self.dtype,
              param_dtype=self.param_dtype, name="fc1")(x)
    h = nn.gelu(h, approximate=True)
    h = constrain(h, ("batch", "length", "mlp"))
    return dense(self.out, ("mlp", "embed"), dtype=self.dtype,
                 param_dtype=self.param_dtype, name="fc2")(h)


def layer_norm(dtype, affine=False, name=None):
  """LayerNorm; statistics in float32 whatever the compute dtype."""
  return nn.LayerNorm(epsilon=1e-6, use_bias=affine, use_scale=affine,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


def modulate(x, shift, scale):
  """adaLN modulation x * (1 + scale) + shift, broadcast over tokens."""
  return x * (1 + scale[:, None]) + shift[:, None]


def check_positive_ints(name: str, values: Sequence[int]):
  if any(int(v) < 1 for v in values):
    raise ValueError(f"{name} must be positive integers, got {values}.")
