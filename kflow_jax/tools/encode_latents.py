r"""Encodes a pixel data set into SD-VAE latents, once, as array_record.

    python -m kflow_jax.tools.encode_latents --config=configs/my_pixels.py \
        --config.input.name=celeb_a_hq --config.input.data_dir=/data/tfds \
        --vae_weights=/models/sd-vae-ft-mse/diffusion_pytorch_model.safetensors \
        --out=/data/celeba256_latents --splits=train --flip

config.input describes the pixel data (any input_pipeline data set, RGB,
image_size divisible by 8). Every process encodes its slice of each split
with a jitted encoder sharded over all devices ("data" mesh axis) and writes
its own file; process 0 writes dataset_info.json. Train on the result with
config.input.name="latents", config.input.path=<out>. Stored split names:
"train" and, for --splits=eval, "test" (config.input.eval_split's default).
"""
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from kflow_jax.models import autoencoder
from kflow_jax.data import input_pipeline
from kflow_jax.infra import sharding
from kflow_jax.data import records

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_WEIGHTS = flags.DEFINE_string(
    "vae_weights", "", "diffusion_pytorch_model.safetensors of the VAE "
    "(default: config.input.vae_weights).")
_SPLITS = flags.DEFINE_list("splits", ["train"],
                            "Splits: train, eval or data set split names.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_FLIP = flags.DEFINE_bool("flip", False, "Also store flipped-image latents.")
_STORE = flags.DEFINE_enum("dtype", "float32", ["float32", "float16"],
                           "Storage dtype of mean/std.")
_COMPUTE = flags.DEFINE_enum("compute_dtype", "float32",
                             ["float32", "bfloat16"], "VAE compute dtype.")
_CHANNELS = flags.DEFINE_list(
    "vae_block_out_channels", ["128", "256", "512", "512"],
    "VAE widths (the SD-VAE default; smaller only for tests).")
_LAYERS = flags.DEFINE_integer("vae_layers_per_block", 2, "VAE depth.")


def _stored_name(split: str) -> str:
  return "test" if split == "eval" else split


def _local_rows(array, dtype) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in order.

  The rows of a process's addressable shards are exactly the local batch it
  fed to make_array_from_process_local_data (single- or multi-process).
  """
  shards = {s.index[0].start or 0: s.data for s in array.addressable_shards}
  return np.concatenate([np.asarray(shards[k], dtype) for k in sorted(shards)])


def encode_dataset(config_input, out: str, *, model, params,
                   weights_path: str, splits=("train",), batch_size=64,
                   flip=False, store_dtype="float32", seed=0) -> dict:
  """Encodes the splits of config.input into `out`; returns the info dict."""
  info = input_pipeline.get_info(config_input)
  h, w, c = info.shape
  f = model.downsample_factor
  if c != model.in_channels or h % f or w % f:
    raise ValueError(
        f"the VAE needs {model.in_channels}-channel images with sides "
        f"divisible by {f}; data set {config_input.name!r} gives {info.shape}.")
  mesh = sharding.make_mesh()
  data_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  # Round the batch up to a multiple of the device count.
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  params = jax.device_put(params, replicated)

  @jax.jit
  def encode(params, x):
    out = [model.apply({"params": params}, x, method=model.encode)]
    if flip:
      out.append(model.apply({"params": params}, x[:, :, ::-1],
                             method=model.encode))
    return jax.lax.with_sharding_constraint(out, data_sharding)

  pi, pc = jax.process_index(), jax.process_count()
  os.makedirs(out, exist_ok=True)
  splits_info, latent_shape = {}, None
  for split in splits:
    stored = _stored_name(split)
    total = input_pipeline.get_info(config_input, split).num_examples
    it = input_pipeline.create(config_input, global_batch_size=batch_size,
                               seed=seed, process_index=pi, process_count=pc,
                               split=split, finite=True)
    filename = records.shard_name(stored, pi, pc)
    writer = records.Writer(os.path.join(out, filename))
    start, done = time.time(), 0
    try:
      for batch in it:
        x = sharding.global_batch(mesh, {"image": batch["image"]})["image"]
        moments = jax.tree.map(lambda a: _local_rows(a, store_dtype),
                               encode(params, x))
        latent_shape = moments[0][0].shape[1:]
        for i in np.flatnonzero(batch["mask"]):
          record = {"mean": moments[0][0][i], "std": moments[0][1][i],
                    "label": int(batch["label"][i])}
          if flip:
            record["mean_flip"] = moments[1][0][i]
            record["std_flip"] = moments[1][1][i]
          writer.write(record)
        done += int(batch["mask"].sum()) * pc
        rate = done / max(time.time() - start, 1e-9)
        logging.log_every_n_seconds(
            logging.INFO, "encode_latents %s: %d/%d images, %.1f img/s, "
            "ETA %.0f s", 30, stored, done, total, rate,
            (total - done) / max(rate, 1e-9))
    finally:
      writer.close()
    logging.info("encode_latents %s: %d images in %.1f s", stored, total,
                 time.time() - start)
    splits_info[stored] = {"num_examples": total, "files": [
        records.shard_name(stored, p, pc) for p in range(pc)]}
  if pc > 1:
    multihost_utils.sync_global_devices("encode_latents_done")
  vae = {"weights": os.path.abspath(weights_path) if weights_path else "",
         "block_out_channels": list(model.block_out_channels),
         "layers_per_block": model.layers_per_block,
         "latent_channels": model.latent_channels,
         "scale_factor": autoencoder.SCALE_FACTOR}
  meta = dict(latent_shape=list(latent_shape), num_classes=info.num_classes,
              image_size=h, flipped=bool(flip), dtype=store_dtype, vae=vae,
              source=config_input.to_dict())
  if pi == 0:
    return records.write_info(out, "latents", splits_info, **meta)
  return {"format": records.FORMAT, "kind": "latents", "splits": splits_info,
          **meta}


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None or not _OUT.value:
    raise app.UsageError("--config and --out are required.")
  if "input" not in config or "seed" not in config:
    raise app.UsageError(
        "--config must be an experiment config (config.input describes the "
        "pixel data set, config.seed its randomness), e.g. "
        "--config=configs/digits.py.")
  config_input = config.input
  if config_input.name == "latents":
    raise app.UsageError(
        "config.input must describe the pixel data set to encode, not "
        "latents; override with --config.input.name=...")
  weights = _WEIGHTS.value or config_input.vae_weights
  if not weights:
    raise app.UsageError(
        "--vae_weights is required: the path of "
        "diffusion_pytorch_model.safetensors (stabilityai/sd-vae-ft-mse).")
  dtype = jnp.bfloat16 if _COMPUTE.value == "bfloat16" else jnp.float32
  model = autoencoder.AutoencoderKL(
      block_out_channels=tuple(int(c) for c in _CHANNELS.value),
      layers_per_block=_LAYERS.value, dtype=dtype)
  params = autoencoder.load_diffusers_weights(weights, model)
  info = encode_dataset(
      config_input, _OUT.value, model=model, params=params,
      weights_path=weights, splits=tuple(_SPLITS.value),
      batch_size=_BATCH.value, flip=_FLIP.value, store_dtype=_STORE.value,
      seed=int(config.seed))
  counts = {s: v["num_examples"] for s, v in info["splits"].items()}
  print(f"wrote {_OUT.value}: {counts}, latents {info['latent_shape']}")


if __name__ == "__main__":
  app.run(main)
