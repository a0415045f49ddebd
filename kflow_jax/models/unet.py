"""ADM-style U-Net (Dhariwal & Nichol 2021) as a velocity field, for pixels.

Residual blocks with GroupNorm and a scale-shift injection of the time/class
embedding, self-attention at chosen levels, channel multipliers per level,
strided-conv downsampling and nearest-neighbour upsampling with skip
connections. Output convolutions start at zero, so v = 0 at init.

Resolution-agnostic: attention levels are given as level indices (0 = full
resolution), not pixel sizes, and nothing depends on H, W beyond needing them
divisible by 2 ** (levels - 1). So the smallest input is 2 ** (levels - 1)
square (one pixel at the bottom level): 2x2 for the "mu" and "ti" presets,
8x8 for "cifar" and "adm64"; smaller ones are refused.

Scale-adaptive runs (kflow_jax/flow/adaptive.py) call one set of weights on
coarse grids of the image. The U-Net has no absolute position (convolutions
are translation-equivariant, with SAME padding at the border), so it takes
the `frame` argument only to share the DiT's call and ignores it: a coarse
pixel's neighbours are the neighbouring coarse pixels, f full pixels apart.
"""
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kflow_jax.models import layers
from kflow_jax.models import text as text_lib

# name -> (channels, channel_mult, num_res_blocks, attention_levels, groups).
SIZES = {
    "mu": (16, (1, 2), 1, (), 8),  # attention only in the middle block
    "ti": (32, (1, 2), 1, (1,), 8),
    # DDPM/ADM CIFAR-10 (32x32): attention at 16x16.
    "cifar": (128, (1, 2, 2, 2), 2, (1,), 32),
    # ADM ImageNet 64x64: attention at 32, 16, 8.
    "adm64": (192, (1, 2, 3, 4), 3, (1, 2, 3), 32),
}


def _conv(features, kernel, dtype, param_dtype, zero=False, strides=1,
          name=None):
  init = (nn.initializers.zeros_init() if zero else
          nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))
  return nn.Conv(
      features, (kernel, kernel), strides=(strides, strides), padding="SAME",
      dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(
          init, (None, None, "conv_in", "embed")),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ("embed",)),
      name=name)


def _norm(groups, dtype, name=None):
  return nn.GroupNorm(
      num_groups=groups, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                              ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                             ("embed",)),
      name=name)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-conv, scale-shift by the embedding, then a zero conv."""
  out: int
  groups: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train=False):
    dt, pdt = self.dtype, self.param_dtype
    h = _conv(self.out, 3, dt, pdt)(nn.silu(_norm(self.groups, dt)(x)))
    ss = layers.dense(2 * self.out, ("embed", "mlp"), dtype=dt,
                      param_dtype=pdt)(nn.silu(emb))
    scale, shift = jnp.split(ss[:, None, None], 2, axis=-1)
    h = _norm(self.groups, dt)(h) * (1 + scale) + shift
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
    h = _conv(self.out, 3, dt, pdt, zero=True)(h)
    if x.shape[-1] != self.out:
      x = _conv(self.out, 1, dt, pdt)(x)
    return layers.constrain(x + h, layers.IMAGE)


class AttnBlock(nn.Module):
  """Self-attention over all pixels of a level; zero output projection."""
  num_heads: int  # channels // head_channels, at least 1
  groups: int     # GroupNorm groups before attention, as in the ResBlocks
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    tok = _norm(self.groups, self.dtype)(x).reshape(b, h * w, c)
    tok = layers.Attention(self.num_heads, dtype=self.dtype,
                           param_dtype=self.param_dtype, zero_proj=True)(tok)
    return x + tok.reshape(b, h, w, c)


class UNet(nn.Module):
  """ADM U-Net velocity backbone; see `models.get("unet", ...)`.

  Attributes:
    size: preset in SIZES ("mu", "ti", "cifar", "adm64"); channels,
      channel_mult, num_res_blocks, attention_levels, norm_groups override it.
    attention_levels: level indices with self-attention (0 = full
      resolution, level l is downsampled by 2 ** l).
    head_channels: channels per attention head.
    dropout: inside residual blocks when train=True (pass
      rngs={"dropout": key} to apply).
    num_classes: 0 = unconditional; row num_classes is the null class.
  """
  size: str = "cifar"
  channels: Optional[int] = None
  channel_mult: Optional[Tuple[int, ...]] = None
  num_res_blocks: Optional[int] = None
  attention_levels: Optional[Tuple[int, ...]] = None
  norm_groups: Optional[int] = None
  head_channels: int = 64
  dropout: float = 0.0
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
  remat: bool = False
  time_scale: float = 1000.0

  def __post_init__(self):
    if self.size not in SIZES:
      raise ValueError(
          f"Unknown U-Net size {self.size!r}; valid sizes: {list(SIZES)}.")
    ch, mult, nres, attn, groups = self.config
    layers.check_positive_ints("channels/channel_mult/num_res_blocks",
                               (ch, nres, *mult))
    if any(not 0 <= a < len(mult) for a in attn):
      raise ValueError(
          f"attention_levels must be level indices in [0, {len(mult)}), got "
          f"{attn}.")
    bad = [ch * m for m in mult if (ch * m) % groups]
    if bad:
      raise ValueError(
          f"GroupNorm with norm_groups={groups} needs every level's channels "
          f"divisible by it; {bad} are not. Pick norm_groups dividing "
          f"{ch}, e.g. 8.")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
    layers.check_head(self.num_classes, self.dtype)
    text_lib.check_slots(self.num_slots, self.slot_kinds, self.text)
    super().__post_init__()

  @property
  def config(self):
    ch, mult, nres, attn, groups = SIZES[self.size]
    return (self.channels or ch, tuple(self.channel_mult or mult),
            self.num_res_blocks or nres,
            tuple(attn if self.attention_levels is None
                  else self.attention_levels),
            self.norm_groups or groups)

  @property
  def grid_multiple(self) -> int:
    """H and W of an input must be multiples of this, 2 ** (levels - 1);
    it is also the smallest size the U-Net accepts."""
    return 2 ** (len(self.config[1]) - 1)

  def _check(self, x, t, y):
    layers.check_xt(x, t)
    levels = len(self.config[1])
    f = 2 ** (levels - 1)
    h, w = x.shape[1:3]
    if h < f or w < f:
      raise ValueError(
          f"U-Net with {levels} levels (channel_mult) halves the grid "
          f"{levels - 1} times, so the smallest input it accepts is {f}x{f}; "
          f"got {h}x{w}. Use fewer levels (a shorter channel_mult) or a "
          "larger grid (for scale-adaptive runs: cut-offs whose coarsest "
          "band lives on a larger grid).")
    if h % f or w % f:
      raise ValueError(
          f"U-Net with {levels} levels needs H and W divisible by {f}, got "
          f"{h}x{w}; pad the input to {-(-h // f) * f}x{-(-w // f) * f} or "
          f"use fewer levels (channel_mult).")
    layers.label_shape_check(y, x.shape[0], self.num_classes,
                             self.num_slots, text_lib.max_tokens(self))

  @nn.compact
  def __call__(self, x, t, y=None, train=False, frame=None):
    self._check(x, t, y)
    del frame  # no absolute positions (see the module doc)
    ch, mult, nres, attn, groups = self.config
    dt = layers.resolve_dtype(self.dtype)
    pdt = self.param_dtype
    res_cls = (nn.remat(ResBlock, static_argnums=(3,)) if self.remat
               else ResBlock)
    # Explicit names keep the parameter tree the same with and without remat.
    res = lambda c, n: res_cls(c, groups, self.dropout, dt, pdt, name=n)
    att = lambda c, n: AttnBlock(max(1, c // self.head_channels), groups, dt,
                                 pdt, name=n)

    emb = layers.TimestepEmbedder(4 * ch, freq_dim=ch,
                                  time_scale=self.time_scale, dtype=dt,
                                  param_dtype=pdt, name="t_embedder")(t)
    if self.num_classes:
      emb = emb + text_lib.embedder(self, 4 * ch, pdt)(y, x.shape[0])
    emb = emb.astype(dt)

    h = _conv(ch, 3, dt, pdt, name="conv_in")(x.astype(dt))
    skips = [h]
    for level, m in enumerate(mult):
      for i in range(nres):
        h = res(ch * m, f"down_{level}_{i}")(h, emb, train)
        if level in attn:
          h = att(ch * m, f"down_{level}_{i}_attn")(h)
        skips.append(h)
      if level != len(mult) - 1:
        h = _conv(ch * m, 3, dt, pdt, strides=2, name=f"downsample_{level}")(h)
        skips.append(h)

    h = res(h.shape[-1], "mid_0")(h, emb, train)
    h = att(h.shape[-1], "mid_attn")(h)
    h = res(h.shape[-1], "mid_1")(h, emb, train)

    for level, m in reversed(list(enumerate(mult))):
      for i in range(nres + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = res(ch * m, f"up_{level}_{i}")(h, emb, train)
        if level in attn:
          h = att(ch * m, f"up_{level}_{i}_attn")(h)
        if level and i == nres:
          b, hh, ww, c = h.shape
          h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
          h = _conv(c, 3, dt, pdt, name=f"upsample_{level}")(h)

    h = nn.silu(_norm(groups, dt, name="norm_out")(h))
    out = _conv(x.shape[-1], 3, dt, pdt, zero=True, name="conv_out")(h)
    return out.astype(jnp.float32)
