r"""ImageNet 256 with Fourier bands: the paper's headline run, by name.

`configs/imagenet.py` with `transform=fourier` (its default): SD-VAE
latents 32x32x4, DiT-L/2, 2 radial-frequency bands, CFG 1.5 (paper FID
2.77 against LFM's 2.78). Everything, the data preparation included, is
documented in `configs/imagenet.py`; this file only gives the command of
the design card a file of its own:

  python -m kflow_jax.main --config=configs/imagenet_fourier.py \
      --workdir=gs://BUCKET/runs/imagenet_fourier \
      --config.input.path=gs://BUCKET/imagenet256_latents

Arguments: those of `configs/imagenet.py` except `transform` (e.g. `moe`,
`runlocal`). Without the encoded latents it stops at once with the
data-set error that says how to build them.
"""
import importlib.util
import os


def _imagenet():
  # By path, beside this file: ml_collections loads config files by path,
  # so `configs` need not be importable from where the command runs.
  f = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet.py")
  spec = importlib.util.spec_from_file_location("configs_imagenet", f)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  if arg and any(a.split("=")[0].strip() == "transform"
                 for a in arg.split(",")):
    raise ValueError("configs/imagenet_fourier.py fixes transform=fourier; "
                     "for another transform use configs/imagenet.py:"
                     "transform=NAME.")
  return _imagenet().get_config(
      ",".join(["transform=fourier"] + ([arg] if arg else [])))
