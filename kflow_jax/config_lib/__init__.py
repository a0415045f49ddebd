"""Experiment configs as data: every key with its default, and config
arguments.

Every file in configs/ starts from `base()`, so each key has one default in
one place: here (the sections read by one module each are in
`sections.py`). This package imports nothing but ml_collections, so a
config file loads without jax, flax or any other heavy library. Configs
hold data only; each section has one reader that checks it and turns it
into what it uses: `experiment.setup` the training sections,
`generate.parse_spec` `sample`, `restore_spec.parse_restore` `restore`,
`evaluators.config.parse_evals` `evals`. Keys (all overridable with
--config.<key>=v):

  seed, batch_size (global, divisible by the device count)
  input.*            the data set, size, reading (sections.input_defaults)
  conditional        class-conditional (labels from the data set)
  label_dropout      CFG training: P(label -> null class)
  cond.*             condition slots: a label per group of bands, their
                     visibility, slot dropout and band-mixed hybrids
                     (flow/slots.py); each slot's kind, a class or a
                     caption, and the text encoder (flow/token_slots.py)
  transform.name     kamp transform (identity = plain flow matching,
                     fourier, dct, wavelet, pca); the other transform.* keys
                     are its options (kamp.options(name))
  pca_examples       examples a data-fitted transform (pca) is fitted on
  path.*             bands (num_scales or cutoffs), energy-aware band times
                     (gamma; energy "data" or "displacement", measured on
                     energy_examples training examples), blend, overlap
  loss.*             t_sampling and the other options of losses.kflow_loss
  model.name         models name; the other model.* keys are its options
                     (models.fields(name)); run-owned options (the MoE's
                     band times tau) come from the run, never the config
  model.scale_adaptive  run band s's network on bands 0..s as a smaller
                     image (kflow_jax/flow/adaptive.py; loss.band_batch_sizes,
                     loss.band_batch_phases)
  model.coarse_units  a scale-adaptive run's coarse grids as they are
                     ("coefficients") or divided by their factor ("mean":
                     block means, the full-resolution network's view)
  model.per_grid_experts  a scale-adaptive run's backbone copied once per
                     coarse grid (models/grid_experts.py): same FLOPs per
                     step, parameters x the number of grids
  optim.*            AdamW, warmup, schedule, clip (sections.optim_defaults)
  ema_decays         one EMA of the params per decay
  mesh.fsdp          fsdp axis size (1 = pure data parallel)

Run-control keys (`run_control()`, RUN_CONTROL_KEYS): how long and how
verbosely a run goes and what the other modes do with it, not what it
computes; a relaunch may change them (config.json comparisons and
config_hash leave them out):

  total_steps, log_every_steps, checkpoint_every_steps, keep_checkpoints,
  sample_every_steps, eval_steps (0 = whole eval split)
  recipe_devices     device count of the published recipe (0 = none): the
                     run logs the per-device batch and warns if it differs
  sample.*           solver, steps, guidance, steering, sample counts
                     (sections.sample_defaults)
  restore.*          --mode=restore / edit / mix: source images,
                     degradation, kept bands, grid (sections.restore_defaults)
  evals.*            --mode=eval metrics (loss, cheap, fid), sample set,
                     reference, classifier, Inception weights, FID protocol,
                     and the in-training evaluation every evals.every_steps
                     (sections.evals_defaults)

ADDED_KEYS: keys added after runs were made, with the default they were
added with, so an old workdir's config.json still matches on relaunch.

Config arguments: `--config=configs/digits.py:transform=wavelet,runlocal`
passes `transform="wavelet", runlocal=True` to the file's `get_config`
through `parse_args`, so one file covers a family of experiments;
`parse_transform_args` adds the check of a `transform` argument. One
helper each for the other jobs the config files share: `set_bands` (the
transform and its bands), `recipe` (a published recipe's numbers),
`lfm_latent_recipe` (the paper's latent configs), `runlocal`.
"""
import ml_collections
from ml_collections import config_dict

from kflow_jax.config_lib import sections
# Keys newer than old workdirs, and reading config.json alike (keys.py).
from kflow_jax.config_lib.keys import ADDED_KEYS  # pylint: disable=unused-import
from kflow_jax.config_lib.keys import flatten  # pylint: disable=unused-import
from kflow_jax.config_lib.keys import same_value  # pylint: disable=unused-import
from kflow_jax.config_lib.keys import without_added_defaults  # pylint: disable=unused-import


def run_control() -> dict:
  """The run-control keys with their defaults (see the module doc)."""
  return dict(
      total_steps=3000,
      # Devices the recipe was published with (0 = none): the run logs the
      # per-device batch and warns when its device count differs.
      recipe_devices=0,
      log_every_steps=50,
      checkpoint_every_steps=500,
      keep_checkpoints=3,
      sample_every_steps=500,
      eval_steps=0,
      sample=sections.sample_defaults(),
      restore=sections.restore_defaults(),
      evals=sections.evals_defaults())


# Top-level keys a relaunch may change (whole sections for sample, restore,
# evals): derived from run_control(), so the list cannot drift from base().
RUN_CONTROL_KEYS = tuple(run_control())

def base() -> ml_collections.ConfigDict:
  """Every config key with its default (see the module doc)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 64
  c.input = sections.input_defaults()
  c.conditional = False
  c.label_dropout = 0.0
  # Condition slots (kflow_jax/flow/slots.py): a class label per group of
  # bands. slot_starts: the first band of each slot, e.g. (0, 1) = slot 0
  # owns band 0, slot 1 the bands from 1 on; None = one label for every
  # band, as before slots existed. visibility: which slots the network
  # reads while band s flows (causal, active, all). Training: every slot
  # null with label_dropout, only slot k null with slot_dropout each, and
  # band_mix the share of band-mixed hybrids (orthonormal transforms);
  # mix_fine_classes: the classes a hybrid's finer slots come from (the
  # others give its coarse slot), None = any batch neighbour.
  # slot_kinds: per slot "class" (a class id) or "tokens" (a caption from
  # config.input.captions through the text encoder, models/text.py); None:
  # every slot a class. text: the encoder; None takes the default (or,
  # with encoder_path, the pretrained encoder's own value): vocab_size the
  # caption vocabulary's, max_tokens 8, width 64, depth 2, heads 4, pool
  # "mean" (or "cls"). encoder_path: a directory written by
  # models.text.save_encoder, fine-tuned with the model, or kept as loaded
  # with freeze=True.
  c.cond = ml_collections.ConfigDict(dict(
      slot_starts=config_dict.placeholder(tuple), visibility="causal",
      slot_dropout=0.0, band_mix=0.0,
      mix_fine_classes=config_dict.placeholder(tuple),
      slot_kinds=config_dict.placeholder(tuple),
      text=ml_collections.ConfigDict(dict(
          vocab_size=config_dict.placeholder(int),
          max_tokens=config_dict.placeholder(int),
          width=config_dict.placeholder(int),
          depth=config_dict.placeholder(int),
          heads=config_dict.placeholder(int),
          pool=config_dict.placeholder(str),
          encoder_path="", freeze=False))))
  c.transform = ml_collections.ConfigDict(dict(name="identity"))
  c.pca_examples = 2048
  c.path = ml_collections.ConfigDict(dict(
      num_scales=1, cutoffs=config_dict.placeholder(tuple), gamma=0.0,
      # Energy behind the band times when gamma != 0 (paths.ENERGY_RULES):
      # "data" E||P_s x1||^2 or "displacement" E||P_s (x1 - x0)||^2.
      energy="data",
      blend="linear", overlap=0.0, energy_examples=1024,
      # What the network sees and moves, in training and sampling alike
      # (paths.band_network, docs/method.md#band-io): hide_input zeroes the
      # bands not yet started at t (there x_t is noise independent of the
      # target), project_output keeps only the bands that flow at t (the
      # true field is zero in the others). Both exact; the network then need
      # not learn the band filters itself.
      hide_input=False, project_output=False))
  # losses.kflow_loss options: t sampling (paths.T_SAMPLING: uniform,
  # logit_normal, band and band_logit_normal with band_weights), and a loss
  # weight per band (band_loss_weights).
  c.loss = ml_collections.ConfigDict(dict(
      t_sampling="uniform", band_weights=config_dict.placeholder(tuple),
      logit_mean=0.0, logit_std=1.0,
      band_loss_weights=config_dict.placeholder(tuple),
      # Or a rule for them (losses.BAND_WEIGHTINGS): "target_scale" weighs
      # band s by its window length squared (losses.target_scale_weights).
      band_weighting="none",
      # Scale-adaptive runs: examples per band in each batch (sum =
      # batch_size); None: proportional to each band's share of t.
      band_batch_sizes=config_dict.placeholder(tuple),
      # And a curriculum of them: ((end_step, B_0, ..., B_{S-1}), ...),
      # each split used for the steps before its end_step, the one above
      # after the last (e.g. coarse to fine: most examples on the cheap
      # coarse grids early). The loss stays unbiased in every phase.
      band_batch_phases=()))
  # U-Net "mu": on 16x16 data it reaches recognisable digits in 2000 CPU
  # steps where a DiT of the same step time (ti/2) is still blurry.
  c.model = model_section("unet", size="mu", dtype="float32")
  c.optim = sections.optim_defaults()
  c.ema_decays = (0.999,)
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))
  for key, value in run_control().items():
    c[key] = value
  return c


def parse_args(arg, **defaults) -> ml_collections.ConfigDict:
  """Config arguments `a=1,b=x,flag` -> {a: 1, b: "x", flag: True}.

  `defaults` names every accepted argument with its default; the type of
  the default converts the value (bool flags may be given bare). Unknown
  names are refused with the list of accepted ones.
  """
  out = dict(defaults)
  for token in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, eq, value = token.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"unknown config argument {key!r} in {arg!r}; this config takes "
          f"{sorted(defaults)} (e.g. --config=configs/<name>.py:"
          f"{_example(defaults)}).")
    kind = type(defaults[key])
    if kind is bool:
      if eq and value.strip().lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key} takes true or false, got "
                         f"{value!r}.")
      out[key] = (not eq) or value.strip().lower() in ("true", "1")
    elif not eq:
      raise ValueError(f"config argument {key!r} needs a value: {key}=...")
    else:
      try:
        out[key] = kind(value.strip())
      except ValueError:
        raise ValueError(f"config argument {key}={value!r} is not a "
                         f"{kind.__name__}.") from None
  return ml_collections.ConfigDict(out)


def _example(defaults) -> str:
  parts = [k if isinstance(v, bool) else f"{k}={v}"
           for k, v in sorted(defaults.items())]
  return ",".join(parts[:2])


# How a run uses its backbone: model.* keys that are not backbone options
# (run/experiment.build_model leaves them out of the backbone's arguments).
RUN_MODEL_KEYS = {
    # Scale-adaptive compute (kflow_jax/flow/adaptive.py): while band s
    # flows the backbone runs on bands 0..s as a smaller image, in
    # training, sampling and evaluation. Needs fourier, dct or an
    # orthogonal wavelet with cut-offs that fit
    # (kamp.coarse.fitting_cutoffs).
    "scale_adaptive": False,
    # Units of those smaller images (flow/adaptive.UNITS): a grid with
    # factor f holds f x its block means; "mean" divides by f so that
    # every grid meets the one set of weights at the full grid's scale.
    "coarse_units": "coefficients",
    # One backbone (own weights) per coarse grid instead of one for all
    # (models/grid_experts.py).
    "per_grid_experts": False,
}


def model_section(name: str, keep=None, **options):
  """config.model for backbone `name` with its `options`; the run's use of
  it (RUN_MODEL_KEYS) carried over from `keep`, the section it replaces,
  or at the defaults. Every config that swaps the backbone goes through
  here, so a new run key reaches every config."""
  run = {k: keep[k] if keep is not None and k in keep else v
         for k, v in RUN_MODEL_KEYS.items()}
  return ml_collections.ConfigDict(dict(name=name, **options, **run))


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
  c.model = model_section("dit", keep=c.model, size="mu", patch_size=2,
                          dtype=c.model.dtype)
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


def digit_recipe(c, transform: str, *, cond: bool, local: bool,
                 slots: bool = False,
                 captions: bool = False) -> ml_collections.ConfigDict:
  """The budget and recipe of the embedded digit sets (configs/digits.py,
  configs/mnist.py): 2000 steps of batch 64; flow matching with
  logit-normal t, K-Flow with band I/O and logit-normal t in each band's
  local time (the recipe study, docs/results/recipe.md); `cond`: labels
  with 10 % dropped, CFG 1.5, a 10 x 10 grid of one class per row;
  `slots`: two condition slots (band 0, bands 1..), 10 % of the
  examples with every slot null, 10 % each with one slot null, 25 %
  band-mixed hybrids (kflow_jax/flow/slots.py); `captions`: those slots
  with the fine one a caption slot (each image's caption from
  config.input.captions="digits", read by a text encoder trained with the
  model; kflow_jax/flow/token_slots.py)."""
  c.total_steps = 2000
  c.batch_size = 64
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 200
  # The recipe study (classifier FD at 800 steps): logit-normal t was the
  # best single change for both methods; for K-Flow, band I/O with
  # logit-normal t inside each band then beat it.
  c.loss.t_sampling = "logit_normal"
  if transform != "identity":
    c.path.hide_input = True
    c.path.project_output = True
    c.loss.t_sampling = "band_logit_normal"
  if cond:
    c.conditional = True
    # LFM's ImageNet label dropout (K-Flow's own is not published).
    c.label_dropout = 0.1
    c.sample.guidance = 1.5
    c.sample.num_samples = 100
    c.sample.batch_size = 100
  if slots or captions:
    c.cond.slot_starts = (0, 1)
    c.cond.slot_dropout = 0.1
    c.cond.band_mix = 0.25
  if captions:
    c.cond.slot_kinds = ("class", "tokens")
    c.input.captions = "digits"
  if local:
    c = runlocal(c)
    if captions:
      # The smallest encoder that still attends (tests compile it often).
      c.cond.text.width, c.cond.text.depth, c.cond.text.heads = 16, 1, 2
    if cond:
      # Two per class over two batches: exercises the class-row layout and
      # noise that must be shared across sampling batches.
      c.sample.num_samples = 20
      c.sample.batch_size = 10
  return c


def parse_transform_args(arg, file: str, transforms, *, transform: str,
                         **extra) -> ml_collections.ConfigDict:
  """parse_args for a config that chooses its transform: the arguments are
  `transform` (its default given) and `extra` (name=default, e.g.
  runlocal=False). A transform not in `transforms` (its names, or a dict
  name -> options) is refused naming the valid ones; `file` names the
  config in the message."""
  a = parse_args(arg, transform=transform, **extra)
  if a.transform not in transforms:
    raise ValueError(f"{file}: transform={a.transform!r}; valid: "
                     f"{sorted(transforms)}.")
  return a


def set_transform(c, name: str, **options) -> None:
  """Selects transform `name` with its options (identity: one band)."""
  c.transform = ml_collections.ConfigDict(dict(name=name, **options))


def set_bands(c, name: str, num_scales: int, **options) -> None:
  """Selects transform `name` with its options and the path's bands:
  identity is plain flow matching (one band), any other transform flows in
  `num_scales` bands."""
  set_transform(c, name, **options)
  c.path.num_scales = 1 if name == "identity" else int(num_scales)


def recipe(c, *, total_steps: int, batch_size: int, recipe_devices: int,
           learning_rate: float, warmup_steps: int, grad_clip_norm: float,
           ema_decay: float, log_every_steps: int,
           checkpoint_every_steps: int, sample_every_steps: int,
           eval_steps: int, sample_batch_size: int) -> None:
  """A published recipe, every number explicit: AdamW at a constant
  learning rate after a linear warmup (no decay, weight decay 0), one EMA
  for sampling, the run's cadence, and adaptive dopri5 sampling (64
  samples; num_steps 50 only for the band strip's fixed steps per band)."""
  c.total_steps = int(total_steps)
  c.batch_size = int(batch_size)
  c.recipe_devices = int(recipe_devices)
  c.optim.learning_rate = float(learning_rate)
  c.optim.schedule = "constant"
  c.optim.warmup_steps = int(warmup_steps)
  c.optim.weight_decay = 0.0
  c.optim.grad_clip_norm = float(grad_clip_norm)
  c.ema_decays = (float(ema_decay),)
  c.log_every_steps = int(log_every_steps)
  c.checkpoint_every_steps = int(checkpoint_every_steps)
  c.sample_every_steps = int(sample_every_steps)
  c.eval_steps = int(eval_steps)
  c.sample.solver = "dopri5"
  c.sample.num_steps = 50
  c.sample.num_samples = 64
  c.sample.batch_size = int(sample_batch_size)


# The transforms of the paper's latent configs, with their options on SD-VAE
# latents (32x32x4 at 256 px): db6 (the paper's CelebA-HQ wavelet) at 1
# level, so its two bands are the approximation and then the detail.
LATENT_TRANSFORMS = {
    "identity": {}, "fourier": {}, "pca": {},
    "wavelet": dict(wavelet="db6", levels=1),
}


def lfm_latent_recipe(c, path: str, *, total_steps: int, batch_size: int,
                      learning_rate: float, recipe_devices: int,
                      model: str = "dit") -> None:
  """The LFM DiT-L/2 recipe on the SD-VAE latents at `path`
  (VinAIResearch/LFM), used by the paper's latent configs where the paper
  is silent: bf16 DiT-L/2, AdamW at a constant learning rate (no warmup,
  decay or clipping), an EMA of 0.9999 for sampling, adaptive dopri5
  sampling; and our choices for all of them: 8 reader processes, uniform
  band times."""
  c.input.name = "latents"
  c.input.path = path
  c.input.num_workers = 8
  c.path.gamma = 0.0
  c.model = model_section(model, keep=c.model, size="L", patch_size=2,
                          dtype="bfloat16")
  recipe(c, total_steps=total_steps, batch_size=batch_size,
         recipe_devices=recipe_devices, learning_rate=learning_rate,
         warmup_steps=0, grad_clip_norm=0.0, ema_decay=0.9999,
         log_every_steps=100, checkpoint_every_steps=5000,
         sample_every_steps=25000, eval_steps=50, sample_batch_size=250)


def runlocal_latent(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """runlocal for the latent recipes: the same backbone kind (DiT or the
  band MoE) at toy size, in float32 (bf16 matmuls are slow on the CPU),
  in-process reading, and Euler (dopri5 compiles for tens of seconds)."""
  model = c.model.name
  c = runlocal(c)
  c.model.name = model
  c.model.dtype = "float32"
  c.input.num_workers = 0
  c.sample.solver = "euler"
  return c
