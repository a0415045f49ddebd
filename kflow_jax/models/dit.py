"""DiT (Peebles & Xie 2023) with adaLN-Zero conditioning, as a velocity field.

v(x_t, t, y): patchify -> tokens + position embedding -> `depth` blocks
modulated by c = embed(t) + embed(y) -> adaLN final layer -> unpatchify.
All modulation and output layers start at zero (adaLN-Zero), so the model
outputs exactly zero at init.

Resolution-agnostic: the sin-cos position embedding is computed from the
grid the input actually has (a numpy constant at trace time); a learned
embedding is stored for the init grid and bilinearly resized for other grids.

Scale-adaptive runs (kflow_jax/flow/adaptive.py) call one set of weights on
coarse grids of the image with `frame=layers.Frame(factor, offset)`: the
position embedding is then evaluated where each coarse token's pixels lie
on the full-resolution grid (fractional positions; the learned table is
interpolated there), so a token keeps the position of its image region
whatever the band.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.models import layers
from kflow_jax.models import text as text_lib

# name -> (hidden, depth, heads). mu/ti are CPU test sizes.
SIZES = {
    "mu": (32, 1, 2),
    "ti": (64, 2, 4),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}
PATCH_SIZES = (1, 2, 4, 8)
POS_EMBEDS = ("sincos", "learned")


class DiTBlock(nn.Module):
  """adaLN-Zero transformer block: shared by DiT and the MoE DiT.

  `route` is unused here; the MoE block reads it to pick experts.
  """
  hidden: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  def mlp(self, h, route):
    del route
    return layers.MlpBlock(int(self.hidden * self.mlp_ratio), self.hidden,
                           dtype=self.dtype, param_dtype=self.param_dtype,
                           name="mlp")(h)

  @nn.compact
  def __call__(self, x, c, route=None):
    mod = layers.dense(6 * self.hidden, ("embed", "mod"), dtype=self.dtype,
                       param_dtype=self.param_dtype, zero=True,
                       name="adaLN_modulation")(nn.silu(c))
    sh_a, sc_a, g_a, sh_m, sc_m, g_m = jnp.split(mod, 6, axis=-1)
    h = layers.modulate(layers.layer_norm(self.dtype, name="norm1")(x),
                        sh_a, sc_a)
    h = layers.Attention(self.num_heads, dtype=self.dtype,
                         param_dtype=self.param_dtype,
                         implementation=self.attention_impl, name="attn")(h)
    x = x + g_a[:, None] * h
    x = layers.constrain(x, layers.TOKENS)
    h = layers.modulate(layers.layer_norm(self.dtype, name="norm2")(x),
                        sh_m, sc_m)
    x = x + g_m[:, None] * self.mlp(h, route)
    return layers.constrain(x, layers.TOKENS)


class DiT(nn.Module):
  """DiT velocity backbone; see `models.get("dit", ...)`.

  Attributes:
    size: one of SIZES ("mu", "ti", "S", "B", "L", "XL"); hidden, depth and
      num_heads override it one by one when given.
    patch_size: 1, 2, 4 or 8; H and W of the input must be multiples of it.
    num_classes: 0 = unconditional; else the label table has num_classes + 1
      rows, the last one the null class used for classifier-free guidance.
    pos_embed: "sincos" (fixed, any resolution) or "learned".
    dtype: compute dtype (e.g. "bfloat16"); parameters are param_dtype.
    remat: gradient checkpointing of every block (nn.remat).
    time_scale: t in [0, 1] is multiplied by this before the sinusoid.
  """
  size: str = "S"
  patch_size: int = 2
  num_classes: int = 0
  # Condition slots (flow/slots.py), set by the run from config.cond:
  # their number, kinds (models/text.py; () = every slot a class) and the
  # text encoder of token slots.
  num_slots: int = 1
  slot_kinds: tuple = ()
  text: Optional[text_lib.TextSpec] = None
  freeze_encoder: bool = False
  hidden: Optional[int] = None
  depth: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_ratio: float = 4.0
  pos_embed: str = "sincos"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  time_scale: float = 1000.0
  attention_impl: Optional[str] = None

  def __post_init__(self):
    if self.size not in SIZES:
      raise ValueError(
          f"Unknown DiT size {self.size!r}; valid sizes: {list(SIZES)}.")
    if self.patch_size not in PATCH_SIZES:
      raise ValueError(
          f"patch_size must be one of {PATCH_SIZES}, got {self.patch_size!r}.")
    if self.pos_embed not in POS_EMBEDS:
      raise ValueError(
          f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}.")
    hidden, _, heads = self.dims
    layers.check_positive_ints("hidden/depth/num_heads", self.dims)
    if hidden % heads:
      fits = max(d for d in range(1, heads + 1) if hidden % d == 0)
      raise ValueError(
          f"hidden ({hidden}) must be divisible by num_heads ({heads}); e.g. "
          f"num_heads={fits}.")
    if self.pos_embed == "sincos" and hidden % 4:
      raise ValueError(
          f"pos_embed='sincos' needs hidden divisible by 4, got {hidden}.")
    layers.check_head(self.num_classes, self.dtype, self.param_dtype)
    text_lib.check_slots(self.num_slots, self.slot_kinds, self.text)
    super().__post_init__()

  @property
  def dims(self):
    h, d, n = SIZES[self.size]
    return (self.hidden or h, self.depth or d, self.num_heads or n)

  def route(self, t):
    """Per-example routing info for the blocks (None: dense DiT)."""
    del t
    return None

  def block(self, i):
    hidden, _, heads = self.dims
    cls = nn.remat(DiTBlock) if self.remat else DiTBlock
    return cls(hidden, heads, self.mlp_ratio, dtype=self._dtype,
               param_dtype=self.param_dtype,
               attention_impl=self.attention_impl, name=f"blocks_{i}")

  @property
  def _dtype(self):
    return layers.resolve_dtype(self.dtype)

  @property
  def grid_multiple(self) -> int:
    """H and W of an input must be multiples of this (the smallest grid
    the DiT accepts is one patch, patch_size x patch_size)."""
    return int(self.patch_size)

  def _pos_embed(self, gh, gw, hidden, frame=None):
    if frame is not None:
      return self._framed_pos_embed(gh, gw, hidden, frame)
    if self.pos_embed == "sincos":
      return jnp.asarray(layers.sincos_2d(gh, gw, hidden))
    table = self._table(gh, gw, hidden)
    if table.shape[:2] != (gh, gw):
      table = jax.image.resize(table, (gh, gw, hidden), "bilinear")
    return table.reshape(gh * gw, hidden)

  def _table(self, gh, gw, hidden):
    """The learned table [th, tw, hidden], created for a gh x gw grid."""
    # Learned: starts from the sin-cos table of the init grid (a better start
    # than noise); other grids are bilinear resizes of the stored table.
    # self.variable, not self.param: param() insists the stored shape equal
    # the shape the init would give for *this* input.
    boxed = nn.with_logical_partitioning(
        lambda: jnp.asarray(layers.sincos_2d(gh, gw, hidden).reshape(
            gh, gw, hidden), self.param_dtype), (None, None, "embed"))
    return self.variable("params", "pos_embed", boxed).value

  def _framed_pos_embed(self, gh, gw, hidden, frame):
    """The embedding at the tokens' positions in the full-resolution token
    frame: exact for sin-cos (evaluated there); for a learned table, which
    holds the full grid's tokens, a bilinear interpolation at the (possibly
    fractional) positions, clamped to its edges."""
    scale, offset = frame.token_positions(self.patch_size)
    if self.pos_embed == "sincos":
      return jnp.asarray(layers.sincos_2d(gh, gw, hidden, scale, offset))
    # Created (if absent) for the full token grid of this input's frame.
    table = self._table(gh * frame.factor, gw * frame.factor, hidden)
    th, tw = table.shape[:2]

    def corners(n, size):
      pos = np.clip(np.arange(n) * scale + offset, 0.0, size - 1.0)
      lo = np.floor(pos).astype(np.int32)
      hi = np.minimum(lo + 1, size - 1)
      return lo, hi, (pos - lo).astype(np.float32)
    h0, h1, wh = corners(gh, th)
    w0, w1, ww = corners(gw, tw)
    rows = (table[h0] * (1 - wh)[:, None, None]
            + table[h1] * wh[:, None, None])
    out = rows[:, w0] * (1 - ww)[None, :, None] + rows[:, w1] * ww[None, :,
                                                                     None]
    return out.reshape(gh * gw, hidden)

  def _check(self, x, t, y):
    layers.check_xt(x, t)
    b, h, w, _ = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(
          f"DiT with patch_size={p} needs H and W divisible by {p}, got "
          f"input {h}x{w}; use patch_size in "
          f"{[q for q in PATCH_SIZES if h % q == 0 and w % q == 0]} or pad "
          f"the input to {-(-h // p) * p}x{-(-w // p) * p}.")
    layers.label_shape_check(y, b, self.num_classes,
                             self.num_slots, text_lib.max_tokens(self))

  @nn.compact
  def __call__(self, x, t, y=None, train=False, frame=None):
    """v(x, t, y); frame (layers.Frame or None): where x's pixels sit on
    the full-resolution grid when x is a coarse grid of the image."""
    del train  # No dropout: label dropout is done by the training step.
    self._check(x, t, y)
    frame = layers.check_frame(frame, "DiT")
    b, h, w, ch = x.shape
    p = self.patch_size
    hidden, depth, _ = self.dims
    dt = self._dtype
    gh, gw = h // p, w // p

    tok = nn.Conv(
        hidden, (p, p), strides=(p, p), padding="VALID", dtype=dt,
        param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=-1),
            (None, None, "conv_in", "embed")),
        bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros_init(), ("embed",)),
        name="x_embedder")(x.astype(dt))
    tok = tok.reshape(b, gh * gw, hidden)
    pos = self._pos_embed(gh, gw, hidden, frame)
    # Inspectable with mutable=["intermediates"] (a no-op otherwise).
    self.sow("intermediates", "pos_embed", pos)
    tok = tok + pos.astype(dt)[None]
    tok = layers.constrain(tok, layers.TOKENS)

    c = layers.TimestepEmbedder(hidden, time_scale=self.time_scale, dtype=dt,
                                param_dtype=self.param_dtype,
                                name="t_embedder")(t)
    if self.num_classes:
      c = c + text_lib.embedder(self, hidden, self.param_dtype)(y, b)
    c = c.astype(dt)

    route = self.route(t)
    for i in range(depth):
      tok = self.block(i)(tok, c, route)

    # Final adaLN layer, zero-initialized: output is exactly 0 at init.
    mod = layers.dense(2 * hidden, ("embed", "mod"), dtype=dt,
                       param_dtype=self.param_dtype, zero=True,
                       name="final_adaLN")(nn.silu(c))
    shift, scale = jnp.split(mod, 2, axis=-1)
    tok = layers.modulate(layers.layer_norm(dt, name="final_norm")(tok),
                          shift, scale)
    out = layers.dense(p * p * ch, ("embed", "patch"), dtype=dt,
                       param_dtype=self.param_dtype, zero=True,
                       name="final_linear")(tok)
    out = out.reshape(b, gh, gw, p, p, ch).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, h, w, ch).astype(jnp.float32)

  def analytic_flops(self, x_shape) -> float:
    """Forward FLOPs (2 x multiply-adds of the matmuls) for x [B, H, W, C].

    DiT's paper reports multiply-adds: analytic_flops / 2 / B of DiT-XL/2 at
    32x32x4 is its 118.6 Gflops. Exactly the dot/conv FLOPs of the traced
    forward; XLA's count adds the elementwise ops (norms, softmax, GELU,
    modulation), O(hidden) per token: +0.9 % at DiT-S widths, +10 % at
    the test size mu (tests/flops_test.py). Training (fwd + bwd) is ~3x.
    """
    b, h, w, ch = x_shape
    hidden, depth, _ = self.dims
    n = (h // self.patch_size) * (w // self.patch_size)
    pp = self.patch_size ** 2
    mlp = int(hidden * self.mlp_ratio)
    per_block = (n * hidden * 4 * hidden      # qkv + proj
                 + 2 * n * n * hidden          # scores and weighted sum
                 + self._active_mlp_macs(n, hidden, mlp)
                 + hidden * 6 * hidden)        # adaLN modulation
    macs = (n * pp * ch * hidden + depth * per_block
            + 256 * hidden + hidden * hidden   # time embedder
            + hidden * 2 * hidden + n * hidden * pp * ch)
    return float(2 * b * macs)

  def _active_mlp_macs(self, n, hidden, mlp):
    return 2 * n * hidden * mlp
