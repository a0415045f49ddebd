"""Encoded latent data sets (name="latents", path=...), read and decoded.

`python -m kflow_jax.tools.encode_latents` encodes a pixel data set once with
the SD-VAE and stores, per example, the posterior mean and std (and
optionally those of the flipped image) in our array_record format. Training
then reads latents like images: each example is z = (mean + std * eps) *
scale_factor with eps from the per-example rng (so resume is exact), and
"image" in the batch is that z [h, w, 4] (unscaled range: about unit
variance, not [-1, 1]).

Switching a config from pixels to latents is `config.input.name="latents"`
plus `config.input.path=<encoded dir>`; `make_decoder(config.input)` gives
the function that turns generated latents back into images.
"""
import functools
from typing import Callable, Optional

import grain
import numpy as np

from kflow_jax.data import base
from kflow_jax.data import preprocess
from kflow_jax.data import records


class LatentSample(grain.transforms.RandomMap):
  """{"mean", "std", ["mean_flip", "std_flip"], "label"} -> scaled latent."""

  def __init__(self, scale_factor: float, sample: bool, random_flip: bool):
    self.scale_factor = float(scale_factor)
    self.sample = bool(sample)
    self.random_flip = bool(random_flip)

  def random_map(self, element, rng: np.random.Generator):
    flip = rng.random() < 0.5  # drawn always: same stream either way
    key = "_flip" if self.random_flip and flip else ""
    mean = np.asarray(element["mean" + key], np.float32)
    z = mean
    if self.sample:
      std = np.asarray(element["std" + key], np.float32)
      z = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
    return preprocess.finish(element, z * self.scale_factor)


def _resolve(cfg, split):
  path = cfg.path
  info = records.read_info(path, "latents", "latents")
  records.split_entry(info, split, path)
  size = cfg.image_size
  if size and int(size) != info["image_size"]:
    raise ValueError(
        f"config.input.image_size={size} but the latents at {path} encode "
        f"{info['image_size']}x{info['image_size']} images; leave "
        "image_size unset (None) for latents or re-encode.")
  return path, info


def _info(cfg, split):
  path, info = _resolve(cfg, split)
  return base.DatasetInfo(tuple(info["latent_shape"]), info["num_classes"],
                          info["splits"][split]["num_examples"])


def _prepare(cfg, split, train):
  path, info = _resolve(cfg, split)
  flip = cfg.random_flip
  if flip and not info["flipped"]:
    raise ValueError(
        f"config.input.random_flip=True but the latents at {path} have no "
        "flipped copies (a latent can not be flipped exactly); re-encode "
        "with `encode_latents --flip` or set random_flip=None/False.")
  flip = info["flipped"] if flip is None else bool(flip)
  scale = cfg.latent_scale_factor
  scale = info["vae"]["scale_factor"] if scale is None else float(scale)
  transform = LatentSample(scale, cfg.latent_sample, train and flip)
  return base.Prepared(records.open_split(path, info, split), transform,
                       _info(cfg, split))


LATENTS = base.Family(_info, _prepare, default_size=None, default_flip=True)


def make_decoder(config_input) -> Optional[Callable]:
  """jitted z_scaled [B, h, w, c] -> images [B, H, W, 3] in about [-1, 1].

  Returns None for pixel data sets (nothing to decode). The VAE weights are
  config.input.vae_weights, else the file the latents were encoded with.
  """
  if config_input.name != "latents":
    return None
  import jax  # pylint: disable=g-import-not-at-top
  from kflow_jax.models import autoencoder  # pylint: disable=g-import-not-at-top
  path = config_input.path
  info = records.read_info(path, "latents", "latents")
  vae = info["vae"]
  weights = config_input.vae_weights or vae["weights"]
  model = autoencoder.AutoencoderKL(
      block_out_channels=tuple(vae["block_out_channels"]),
      layers_per_block=vae["layers_per_block"],
      latent_channels=vae["latent_channels"])
  params = autoencoder.load_diffusers_weights(weights, model)
  scale = config_input.latent_scale_factor
  scale = vae["scale_factor"] if scale is None else float(scale)

  # params as an argument, not a closed-over constant: 84M weights baked
  # into the executable would make compiling slow and double the memory.
  @jax.jit
  def decode_with(params, z):
    return model.apply({"params": params}, z / scale, method=model.decode)
  return functools.partial(decode_with, params)
