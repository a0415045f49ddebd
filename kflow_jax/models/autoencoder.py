"""Latent space: the SD-VAE (diffusers AutoencoderKL) in Flax, and its import.

K-Flow's latent experiments (like LFM) use the Stable Diffusion VAE
(stabilityai/sd-vae-ft-mse, f = 8, 4 latent channels, scale 0.18215). This
module is that architecture, named like diffusers so every tensor of the
public `diffusion_pytorch_model.safetensors` maps by name:

    diffusers "encoder.down_blocks.0.resnets.1.conv1.weight" [O, I, 3, 3]
    flax      params["encoder"]["down_blocks_0"]["resnets_1"]["conv1"]
              ["kernel"] [3, 3, I, O]

(".N" joins its parent with "_N"; conv OIHW -> HWIO; linear transposed;
norm "weight" -> "scale"). Older files name the attention to_q/to_k/to_v/
to_out.0 as query/key/value/proj_attn; both are accepted. Users download
the file themselves; nothing is fetched here.

    model = autoencoder.sd_vae()
    params = autoencoder.load_diffusers_weights(path, model)
    mean, std = model.apply({"params": params}, x, method=model.encode)
    x = model.apply({"params": params}, z, method=model.decode)
"""
import re
from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.infra import torch_layout

# z_model = SCALE_FACTOR * z_vae gives latents of about unit variance.
SCALE_FACTOR = 0.18215
# Parameter count of stabilityai/sd-vae-ft-mse (diffusers AutoencoderKL).
SD_VAE_NUM_PARAMS = 83_653_863


def _norm(dtype, name):
  # PyTorch GroupNorm(32, C, eps=1e-6) == flax GroupNorm over (H, W, C/32).
  return nn.GroupNorm(num_groups=32, epsilon=1e-6, dtype=dtype, name=name)


def _conv(features, dtype, kernel=3, name=None):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """diffusers ResnetBlock2D without time embedding."""
  out_channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.silu(_norm(self.dtype, "norm1")(x))
    h = _conv(self.out_channels, self.dtype, name="conv1")(h)
    h = nn.silu(_norm(self.dtype, "norm2")(h))
    h = _conv(self.out_channels, self.dtype, name="conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, self.dtype, 1, name="conv_shortcut")(x)
    return x + h


class Attention(nn.Module):
  """Single-head spatial self-attention of the VAE mid block."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = _norm(self.dtype, "group_norm")(x).reshape(b, h * w, c)
    dense = lambda name: nn.Dense(c, dtype=self.dtype, name=name)
    q, k, v = dense("to_q")(y), dense("to_k")(y), dense("to_v")(y)
    # Softmax in float32 whatever the compute dtype (4096 tokens at 512^2).
    logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32)
    weights = jax.nn.softmax(logits / np.sqrt(c), axis=-1)
    y = jnp.einsum("bqk,bkc->bqc", weights.astype(v.dtype), v)
    y = dense("to_out_0")(y)
    return x + y.reshape(b, h, w, c)


class MidBlock(nn.Module):
  channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = ResnetBlock(self.channels, self.dtype, name="resnets_0")(x)
    x = Attention(self.dtype, name="attentions_0")(x)
    return ResnetBlock(self.channels, self.dtype, name="resnets_1")(x)


class Encoder(nn.Module):
  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _conv(self.block_out_channels[0], self.dtype, name="conv_in")(x)
    last = len(self.block_out_channels) - 1
    for i, ch in enumerate(self.block_out_channels):
      for j in range(self.layers_per_block):
        x = ResnetBlock(ch, self.dtype, name=f"down_blocks_{i}_resnets_{j}")(x)
      if i != last:
        # diffusers Downsample2D(padding=0): pad right/bottom by 1, stride 2.
        x = nn.Conv(ch, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)),
                    dtype=self.dtype,
                    name=f"down_blocks_{i}_downsamplers_0_conv")(x)
    x = MidBlock(self.block_out_channels[-1], self.dtype, name="mid_block")(x)
    x = nn.silu(_norm(self.dtype, "conv_norm_out")(x))
    return _conv(2 * self.latent_channels, self.dtype, name="conv_out")(x)


class Decoder(nn.Module):
  out_channels: int
  block_out_channels: Sequence[int]
  layers_per_block: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    chans = tuple(reversed(self.block_out_channels))
    x = _conv(chans[0], self.dtype, name="conv_in")(z)
    x = MidBlock(chans[0], self.dtype, name="mid_block")(x)
    for i, ch in enumerate(chans):
      for j in range(self.layers_per_block + 1):
        x = ResnetBlock(ch, self.dtype, name=f"up_blocks_{i}_resnets_{j}")(x)
      if i != len(chans) - 1:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2
        x = _conv(ch, self.dtype, name=f"up_blocks_{i}_upsamplers_0_conv")(x)
    x = nn.silu(_norm(self.dtype, "conv_norm_out")(x))
    return _conv(self.out_channels, self.dtype, name="conv_out")(x)


class AutoencoderKL(nn.Module):
  """diffusers AutoencoderKL (SD-VAE by default); NHWC, images in [-1, 1].

  encode(x [B, H, W, 3]) -> (mean, std) each [B, H/f, W/f, latent_channels]
  with f = 2 ** (len(block_out_channels) - 1); decode(z) -> x. Latents here
  are unscaled; multiply by SCALE_FACTOR for the generative model.
  """
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  in_channels: int = 3
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.encoder = Encoder(self.block_out_channels, self.layers_per_block,
                           self.latent_channels, self.dtype)
    self.decoder = Decoder(self.in_channels, self.block_out_channels,
                           self.layers_per_block, self.dtype)
    self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1),
                              dtype=self.dtype)
    self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1),
                                   dtype=self.dtype)

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def encode(self, x):
    moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    logvar = jnp.clip(logvar, -30.0, 20.0)  # as diffusers' posterior
    return mean, jnp.exp(0.5 * logvar)

  def decode(self, z):
    x = self.decoder(self.post_quant_conv(z.astype(self.dtype)))
    return x.astype(jnp.float32)

  def __call__(self, x):
    mean, _ = self.encode(x)
    return self.decode(mean)


def sd_vae(dtype=jnp.float32) -> AutoencoderKL:
  """The SD-VAE architecture (stabilityai/sd-vae-ft-mse, sd-vae-ft-ema)."""
  return AutoencoderKL(dtype=dtype)


def sample(rng, mean, std):
  """z ~ N(mean, std^2) (the posterior sample diffusers calls .sample())."""
  return mean + std * jax.random.normal(rng, mean.shape, mean.dtype)


def param_shapes(model: AutoencoderKL, image_size: int = 64):
  """The model's parameter tree as ShapeDtypeStructs (no allocation)."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, model.in_channels),
                           jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return variables["params"]


# --------------------------------------------------------- weight import

# Older diffusers files (before 0.14) name the attention projections so.
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v",
                  "proj_attn": "to_out.0"}


def diffusers_to_flax_path(name: str) -> tuple:
  """'encoder.down_blocks.0.resnets.1.conv1.weight' -> flax param path.

  -> ('encoder', 'down_blocks_0_resnets_1', 'conv1', 'kernel'): an index
  joins its parent ('to_out.0' -> 'to_out_0'); a down/up block's children
  are flattened into one flax module name; 'weight' is 'scale' for norms
  and 'kernel' otherwise; old attention names are renamed first.
  """
  parts = name.split(".")
  leaf = parts.pop()
  if parts and parts[-1] in _OLD_ATTENTION:
    parts = parts[:-1] + _OLD_ATTENTION[parts[-1]].split(".")
  merged = []
  for p in parts:
    if p.isdigit() and merged:
      merged[-1] = f"{merged[-1]}_{p}"
    else:
      merged.append(p)
  if len(merged) > 2 and merged[1].startswith(("down_blocks_", "up_blocks_")):
    sampler = merged[2].startswith(("downsamplers_", "upsamplers_"))
    k = 4 if sampler else 3
    merged = merged[:1] + ["_".join(merged[1:k])] + merged[k:]
  if leaf == "weight":
    leaf = "scale" if "norm" in merged[-1] else "kernel"
  return tuple(merged) + (leaf,)


def _convert(value: np.ndarray, target_shape: tuple, name: str):
  return torch_layout.to_flax(
      value, target_shape, name, "is this the SD-VAE (block_out_channels "
      "(128, 256, 512, 512), 4 latent channels)?")


def convert_diffusers_state_dict(state_dict: dict,
                                 model: AutoencoderKL = None) -> dict:
  """diffusers AutoencoderKL tensors (name -> array) -> flax params.

  Every model parameter must be matched exactly once; missing and
  unexpected names are listed in the error.
  """
  model = model or sd_vae()
  targets = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(param_shapes(model)))
  out, unexpected = {}, []
  for name, value in state_dict.items():
    path = diffusers_to_flax_path(name)
    if path not in targets:
      unexpected.append(name)
      continue
    if path in out:
      raise ValueError(f"two tensors map onto {'/'.join(path)} (one is "
                       f"{name!r}); the file mixes old and new names.")
    out[path] = _convert(value, targets[path].shape, name)
  missing = sorted("/".join(p) for p in targets if p not in out)
  if missing or unexpected:
    raise ValueError(
        "diffusers weights do not match the SD-VAE: "
        f"missing {len(missing)} {missing[:20]}; unexpected "
        f"{len(unexpected)} {sorted(unexpected)[:20]}. Use "
        "diffusion_pytorch_model.safetensors of stabilityai/sd-vae-ft-mse.")
  return flax.traverse_util.unflatten_dict(out)


def load_diffusers_weights(path: str, model: AutoencoderKL = None) -> dict:
  """Reads diffusion_pytorch_model.safetensors (no torch) -> flax params."""
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  try:
    state_dict = st_numpy.load_file(path)
  except FileNotFoundError:
    raise ValueError(
        f"no SD-VAE weights at {path!r}. Download "
        "diffusion_pytorch_model.safetensors from the Hugging Face repo "
        "stabilityai/sd-vae-ft-mse (vae/ folder of SD checkpoints works "
        "too) and pass its path.") from None
  return convert_diffusers_state_dict(state_dict, model)


def flax_to_diffusers_name(path: tuple) -> str:
  """Inverse of diffusers_to_flax_path (new attention names)."""
  *modules, leaf = path
  # "down_blocks_0_resnets_1" -> "down_blocks.0.resnets.1", "to_out_0" ->
  # "to_out.0": an index is its own dotted component in diffusers.
  name = ".".join(
      re.sub(r"_(\d+)(_|$)",
             lambda m: "." + m.group(1) + ("." if m.group(2) else ""), mod)
      for mod in modules)
  leaf = "weight" if leaf in ("kernel", "scale") else leaf
  return f"{name}.{leaf}"


def to_diffusers_state_dict(params) -> dict:
  """flax params -> diffusers-named numpy tensors (OIHW convs, [out, in])."""
  return torch_layout.to_torch_state_dict(params, flax_to_diffusers_name)
