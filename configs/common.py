"""Shared config parts: every experiment file starts from `base()`.

Configs hold data only. Keys (all overridable with --config.<key>=value):

  seed, total_steps, batch_size (global, divisible by the device count)
  input.*            input_pipeline.default_config() keys (data set, size)
  conditional        class-conditional (labels from the data set)
  label_dropout      CFG training: P(label -> null class)
  transform.name     kamp transform (identity = plain flow matching, fourier,
                     dct, wavelet, pca); other transform.* keys go to kamp.get
  pca_examples       examples used to fit the PCA basis (pca only)
  path.*             bands (num_scales or cutoffs), energy-aware band times
                     (gamma, measured on energy_examples training examples),
                     blend, overlap
  loss.*             keyword options of losses.kflow_loss (t_sampling, ...)
  model.name         models.get name; other model.* keys go to models.get
  optim.*            optim.default_config(): AdamW, warmup, cosine/constant
  ema_decays         one EMA of the params per decay
  mesh.fsdp          fsdp axis size (1 = pure data parallel)
  log_every_steps, checkpoint_every_steps, keep_checkpoints,
  sample_every_steps, eval_steps (0 = whole eval split)
  sample.*           --mode=sample and the sample grids: num_samples,
                     batch_size, solver, num_steps, guidance, project (band
                     projection), use_ema, ema_decay (None: the first), seed,
                     at_end (write samples.png and band_strip.png at the end);
                     steering: guidance_bands (CFG only in these bands),
                     class_drop_t (label only while t < it; -1 = off),
                     shared_bands (noise of these bands shared by the batch)
"""
import os
import sys

import ml_collections
from ml_collections import config_dict

# The package is importable from a checkout without installing it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from kflow_jax import input_pipeline  # noqa: E402
from kflow_jax import optim  # noqa: E402


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 3000
  c.batch_size = 64
  c.input = input_pipeline.default_config()
  c.conditional = False
  c.label_dropout = 0.0
  c.transform = ml_collections.ConfigDict(dict(name="identity"))
  c.pca_examples = 2048
  c.path = ml_collections.ConfigDict(dict(
      num_scales=1, cutoffs=config_dict.placeholder(tuple), gamma=0.0,
      blend="linear", overlap=0.0, energy_examples=1024))
  c.loss = ml_collections.ConfigDict(dict(t_sampling="uniform"))
  # U-Net "mu": on 16x16 data it reaches recognisable digits in 2000 CPU
  # steps where a DiT of the same step time (ti/2) is still blurry.
  c.model = ml_collections.ConfigDict(dict(name="unet", size="mu",
                                           dtype="float32"))
  c.optim = optim.default_config()
  c.ema_decays = (0.999,)
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.sample_every_steps = 500
  c.eval_steps = 0
  c.sample = ml_collections.ConfigDict(dict(
      num_samples=64, batch_size=64, solver="euler", num_steps=40,
      guidance=1.0, project=False, use_ema=True,
      ema_decay=config_dict.placeholder(float), seed=1, at_end=True,
      guidance_bands=(), class_drop_t=-1.0, shared_bands=()))
  return c


def parse_arg(arg) -> bool:
  """True for the `runlocal` argument (--config=configs/x.py:runlocal)."""
  arg = (arg or "").strip()
  if arg not in ("", "runlocal"):
    raise ValueError(
        f"Unknown config argument {arg!r}; the only one is 'runlocal' "
        "(--config=configs/<name>.py:runlocal).")
  return arg == "runlocal"


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to seconds on the CPU: tests and smoke runs."""
  c.total_steps = 6
  c.batch_size = 16
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.sample_every_steps = 0
  c.eval_steps = 2
  c.pca_examples = 256
  c.path.energy_examples = 64
  c.optim.warmup_steps = 2
  # The smallest, fastest-compiling backbone: tests compile it many times.
  c.model = ml_collections.ConfigDict(dict(
      name="dit", size="mu", patch_size=2, dtype=c.model.get(
          "dtype", "float32")))
  c.ema_decays = (0.9,)
  c.sample.num_samples = 8
  c.sample.batch_size = 8
  c.sample.num_steps = 4
  c.input.num_threads = 1
  c.input.prefetch_batches = 1
  if c.input.name == "natural_patches":
    c.input.patches_per_epoch = 256
    c.input.eval_patches = 64
  return c


def digits(transform: str, arg, **transform_kwargs):
  """Digits 16x16 grey (sklearn, embedded): a few minutes on this CPU."""
  c = base()
  c.input.name = "digits"
  c.transform = ml_collections.ConfigDict(dict(name=transform,
                                               **transform_kwargs))
  c.path.num_scales = 1 if transform == "identity" else 2
  c.total_steps = 2000
  c.batch_size = 64
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 200
  return runlocal(c) if parse_arg(arg) else c


def patches(transform: str, arg, **transform_kwargs):
  """Natural-image patches 16x16 RGB (skimage photos, embedded)."""
  c = base()
  c.input.name = "natural_patches"
  c.input.image_size = 16
  c.transform = ml_collections.ConfigDict(dict(name=transform,
                                               **transform_kwargs))
  c.path.num_scales = 1 if transform == "identity" else 3
  # Natural images have a 1/f spectrum: give the energetic coarse bands
  # more time (DESIGN.md energy-aware scaling).
  c.path.gamma = 0.0 if transform == "identity" else 0.5
  c.total_steps = 3000
  c.batch_size = 64
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 200
  return runlocal(c) if parse_arg(arg) else c
