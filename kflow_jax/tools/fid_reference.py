r"""Writes FID reference statistics of a data set split.

  python -m kflow_jax.tools.fid_reference --config=configs/my_config.py \
      --out=/data/ref_stats.npz [--split=eval] [--max_examples=10000] \
      [--protocol=pytorch_fid|adm] [--weights=PATH.pth] [--images]

Reads the split once through the input pipeline (config.input: the same
data set, size and crop the model trains on; latents are decoded to pixels
with the config's VAE), quantises to uint8 like generated samples, runs the
FID Inception (pytorch-fid's weights, sharded over every device) and writes
mu, sigma (pool3) and mu_s, sigma_s (spatial, sFID) in float64 in ADM's
layout, plus the uint8 images as arr_0 unless --noimages (precision/recall
need them), and meta_protocol / meta_weights_sha256 / meta_source, which
--mode=eval checks. Use it with --config.evals.fid_reference=<out>.
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from kflow_jax.evaluators import preprocess

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.")
_OUT = flags.DEFINE_string("out", None, "Output .npz.")
_SPLIT = flags.DEFINE_string(
    "split", "eval", "train, eval (config.input.eval_split) or a split name.")
_MAX = flags.DEFINE_integer("max_examples", 0,
                            "Use the split's first N examples; 0: all.")
_PROTOCOL = flags.DEFINE_enum("protocol", "pytorch_fid",
                              list(preprocess.PROTOCOLS),
                              "Inception preprocessing protocol.")
_WEIGHTS = flags.DEFINE_string(
    "weights", "", "pytorch-fid Inception .pth (default: "
    "$KFLOW_INCEPTION_WEIGHTS or ~/.cache/kflow_jax/).")
_CHECK_HASH = flags.DEFINE_bool(
    "check_hash", True, "Check the weights' sha256 (off only for test "
    "weights).")
_IMAGES = flags.DEFINE_bool("images", True,
                            "Store the uint8 images as arr_0.")
_BATCH = flags.DEFINE_integer("batch_size", 50, "Inception batch size.")


def write_reference(config, out: str, *, split: str = "eval",
                    max_examples: int = 0, protocol: str = "pytorch_fid",
                    weights: str = "", check_hash: bool = True,
                    images: bool = True, batch_size: int = 50) -> dict:
  """Computes and writes the reference file; returns a summary dict."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import evaluate
  from kflow_jax.infra import sharding
  from kflow_jax.evaluators import fid
  from kflow_jax.evaluators import sharded_features
  # pylint: enable=g-import-not-at-top
  if not out.endswith(".npz"):
    raise ValueError(f"--out={out!r} must end in .npz (numpy would append "
                     "it and the file would not be where you asked).")
  variables, wpath = sharded_features.load_weights(weights, check_hash)
  ref, _ = evaluate.reference_images(config, split, max_examples)
  fn, bs = sharded_features.feature_fn(variables, protocol,
                                       sharding.make_mesh(1), batch_size)
  stats = fid.feature_statistics(fid.extract_features(fn, ref,
                                                      batch_size=bs))
  source = (f"{config.input.name} split={split} n={len(ref)} "
            f"shape={list(ref.shape[1:])}")
  if jax.process_index() == 0:
    # ADM's layout holds RGB images; grey ones are repeated to 3 channels,
    # as the Inception preprocessing does (same features).
    rgb = np.repeat(ref, 3, axis=-1) if ref.shape[-1] == 1 else ref
    fid.save_reference(out, stats, rgb if images else None)
    with np.load(out, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    arrays[sharded_features.META_PROTOCOL] = np.asarray(protocol)
    arrays[sharded_features.META_WEIGHTS] = np.asarray(
        sharded_features.sha256(wpath))
    arrays[sharded_features.META_SOURCE] = np.asarray(source)
    np.savez(out, **arrays)
  return {"out": out, "num_examples": int(len(ref)), "protocol": protocol,
          "weights": wpath, "source": source}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  try:
    info = write_reference(
        _CONFIG.value, _OUT.value, split=_SPLIT.value,
        max_examples=_MAX.value, protocol=_PROTOCOL.value,
        weights=_WEIGHTS.value, check_hash=_CHECK_HASH.value,
        images=_IMAGES.value, batch_size=_BATCH.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"\nkflow_jax: error: {e}", file=sys.stderr)
    raise SystemExit(1) from None
  logging.info("FID reference: %s", info)
  print(f"wrote {info['out']}: {info['num_examples']} examples of "
        f"{info['source']}, protocol {info['protocol']}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
