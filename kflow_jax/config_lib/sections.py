"""The config sections read by one module each, with every key's default.

Data only (ml_collections, nothing heavier): each section's reader checks
it and turns it into what it uses (`input_pipeline`, `optim`,
`generate.parse_spec`, `restore_spec.parse_restore`,
`evaluators.config.parse_evals`), and never repeats a default here.
"""
import ml_collections
from ml_collections import config_dict


def input_defaults() -> ml_collections.ConfigDict:
  """config.input: the data (kflow_jax/data/input_pipeline.py)."""
  c = ml_collections.ConfigDict()
  # Which data: a name from kflow_jax.data.names().
  c.name = "digits"
  c.split = "train"        # split read when create(split="train")
  c.eval_split = "test"    # split read when create(split="eval")
  # Pixel size S of the square model input; None: the data set's default
  # (digits 16, natural_patches/cifar10/mnist 32, celeb_a 64,
  # imagenet2012/celeb_a_hq/lsun 256; folder/latents: as stored).
  c.image_size = config_dict.placeholder(int)
  c.crop = "center"        # "center" (ADM center_crop_arr) or "resize"
  c.random_flip = config_dict.placeholder(bool)  # None: data set default
  c.shuffle = True         # training mode only; order is seeded
  # Where prepared data lives: the TFDS data_dir (local or gs://; None: the
  # TFDS default) for TFDS sets; a built directory for folder/latents.
  c.data_dir = config_dict.placeholder(str)
  c.path = ""              # folder/latents: directory written by the tools
  c.tfds_name = ""         # name="tfds": any prepared TFDS data set name
  # Reading: grain worker processes (0 = in-process, right for CPU tests),
  # reader threads and prefetched batches per process.
  c.num_workers = 0
  c.num_threads = 2
  c.prefetch_batches = 4
  # digits: how 8x8 becomes image_size: "resize" (bicubic) or "pad".
  c.digits_fit = "resize"
  # natural_patches: photos (empty: all shipped), held-out photos, bank
  # sizes, the bank's own seed and the largest zoom-out of a crop.
  c.photos = ()
  c.eval_photos = ("chelsea", "gravel")
  c.patches_per_epoch = 10000
  c.eval_patches = 2000
  c.patch_seed = 0
  c.patch_max_zoom = 2.0
  # natural_patches split: "photos" (eval_photos held out) or "regions"
  # (every photo in both splits; the right-most patch_eval_region share of
  # each photo's width held out; eval_photos must be empty).
  c.patch_split = "photos"
  c.patch_eval_region = 0.25
  # latents (name="latents", path=...): sample z = mean + std * eps (else
  # use the mean), times the scale factor (None: the one stored with the
  # latents, 0.18215 for SD-VAE).
  c.latent_sample = True
  c.latent_scale_factor = config_dict.placeholder(float)
  # SD-VAE weights (diffusion_pytorch_model.safetensors) for decoding
  # samples; "": the file the latents were encoded with.
  c.vae_weights = ""
  # Captions for token condition slots (config.cond.slot_kinds, data/
  # captions.py): "" none, "digits" (digits, mnist5k): each image a caption
  # of its class, its phrasing drawn from (caption_seed, its index).
  c.captions = ""
  c.caption_seed = 0
  return c


def optim_defaults() -> ml_collections.ConfigDict:
  """config.optim (kflow_jax/run/optim.py): AdamW with a linear warmup to
  learning_rate, then schedule "cosine" (decay to end_lr_factor x the peak
  at total_steps) or "constant" (the LFM recipe,
  docs/method.md#paper-gaps); grad_clip_norm clips by global norm (0:
  off)."""
  return ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=100, schedule="cosine",
      end_lr_factor=0.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      grad_clip_norm=1.0))


def sample_defaults() -> ml_collections.ConfigDict:
  """config.sample: how a trained run samples (generate.parse_spec)."""
  return ml_collections.ConfigDict(dict(
      # How many samples --mode=sample writes, in batches of batch_size; the
      # training loop's grids use the same count.
      num_samples=64, batch_size=64,
      # Solver (sampling.SOLVERS): fixed-step ones take num_steps (split
      # over the bands by their time share), adaptive ones rtol / atol.
      solver="euler", num_steps=40, rtol=1e-5, atol=1e-5,
      # Fixed-step solvers: num_steps split over the bands by their share
      # of t ("time"), equally ("band": short bands get as many steps as
      # long ones), or by share / sqrt(cost of a call) ("cost": on a
      # scale-adaptive run the coarse grids' cheap calls get more steps,
      # the finest grid fewer; on a full-resolution run the same as time).
      step_allocation="time",
      project=False,            # band projection of the velocity
      guidance=1.0,             # classifier-free guidance scale w
      guidance_bands=(),        # CFG only in these bands (plain elsewhere)
      class_drop_t=-1.0,        # label only while t < it; -1 = off
      # Runs with condition slots (config.cond.slot_starts, flow/slots.py):
      # rows of K labels, sample i takes row i % R (-1 = null); () = every
      # slot the class i % num_classes. guidance_matrix: W[band][slot]
      # (() = guidance for every slot; given, it replaces guidance; one
      # column on a one-label run: a weight per band); guidance_mode:
      # active (2 evaluations per step), nested or composable (K + 1).
      slot_labels=(), guidance_matrix=(), guidance_mode="active",
      # Runs with token (caption) slots (config.cond.slot_kinds): rows of K
      # strings, sample i takes row i % R: a caption for a token slot, a
      # class id ("3") for a class slot, "" = null; tokenized with the
      # run's caption vocabulary (config.input.captions).
      slot_captions=(),
      # Baselines on a run trained with one label (flow/slots.py): rows of
      # slot_labels used one after another, label k from time
      # label_switch_t[k-1] on; or factorized over the bands of these
      # cut-offs on the run's transform, label k moving band k.
      label_switch_t=(), factorized_cutoffs=(),
      shared_bands=(),          # noise of these bands shared by all samples
      use_ema=True, ema_decay=config_dict.placeholder(float),  # None: first
      seed=1,
      save_latents=False,       # latent configs: keep latents in the chunks
      at_end=True))             # samples.png and band_strip.png at the end


def restore_defaults() -> ml_collections.ConfigDict:
  """config.restore: --mode=restore, edit and mix
  (restore_spec.parse_restore)."""
  return ml_collections.ConfigDict(dict(
      # Input images of restore and edit: "eval" (the eval split) or a
      # directory of PNG/JPEG files (class subfolders allowed; center-cropped
      # and resized to the run's image size).
      source="eval",
      num_images=8,
      batch_size=64,
      # restore: lowres:N (area down-sampling by N), blur:SIGMA (Gaussian,
      # pixels), noise:SIGMA (additive, in [-1, 1] units),
      # inpaint:X0,Y0,X1,Y1 (box [X0, X1) x [Y0, Y1) unknown).
      degradation="lowres:2",
      # restore: "auto" keeps bands 0..m, m the last of the leading bands of
      # which the observation determines at least `determined` (a fraction,
      # determined_fractions; inpaint: -1); or an int m >= -1 (-1: generate
      # every band).
      # edit: comma-separated bands to keep ("auto": "0").
      keep_bands="auto",
      determined=0.5,
      # restore: start the flow at this t instead (SDEdit-style, any path;
      # e.g. flow matching at the t where a K-Flow run starts); -1: at the
      # end of the kept bands.
      t_start=-1.0,
      # Training images the determined fractions are measured on (0: white
      # noise instead, a data-free but pessimistic measure).
      prior_examples=256,
      consistency=True,        # restore: data-consistency step after each step
      # restore: the flow's data stand-in. "operator": the degradation's
      # own (lowres: bicubic made consistent; blur: Wiener with a constant
      # lambda; noise: y itself); "wiener" (noise:SIGMA only): the linear
      # MMSE denoiser with the mean image and power spectrum of
      # prior_examples training images, whose gain is then the
      # consistency step's C.
      estimate="operator",
      # restore, noise:SIGMA with estimate=operator: count y's noise as the
      # path's at the start (the start's own noise shrunk to the path's
      # level, degradation.matched_noise), started at t_start or (-1) the
      # latest t where y's noise fits (degradation.matched_time), so that
      # the flow denoises every band.
      match_noise=False,
      # restore: "ode": config.sample's solver, the consistency step on the
      # path after each step; "predict": one field call per step, the
      # predicted image made consistent, the state put back on the path
      # toward it (degradation.predict_flow).
      sampler="ode",
      # restore, sampler=predict: share of the flowing bands' noise drawn
      # afresh at every step (0: deterministic; 1: all new).
      renoise=0.0,
      # restore: mean of this many restorations of independent noises (an
      # estimate of the posterior mean, what PSNR rewards; 1: one draw).
      num_draws=1,
      num_steps=0,             # 0: the spec's share of num_steps after t_start
      num_edits=4,             # edit: variations per image
      rows=4, cols=4,          # mix, hybrid: grid size
      # hybrid: the classes of the grid's rows (slot 0) and columns (the
      # finer slots), e.g. (0,1,2,3) and (4,5,6) for configs/patches.py:
      # slots; None: classes 0..rows-1 and 0..cols-1 (mod the class count).
      # Given, they set the grid's size.
      row_classes=config_dict.placeholder(tuple),
      col_classes=config_dict.placeholder(tuple),
      split_band=1,            # mix: bands < split from the row noise
      # mix: band cut-offs of the noise split and the correlations, on the
      # run's transform (e.g. (0.0, 0.5, 1.0) for a one-band flow-matching
      # run); None: the path's bands.
      mix_cutoffs=config_dict.placeholder(tuple),
      label=0,                 # mix (and folder images): class of
                               # conditional runs; -1 = the null class
      seed=0))


def evals_defaults() -> ml_collections.ConfigDict:
  """config.evals: what --mode=eval and the in-training evaluation score
  (evaluators.config.parse_evals)."""
  return ml_collections.ConfigDict(dict(
      metrics=("loss", "cheap"),  # any of evaluate.METRICS, for --mode=eval
      # A sample-set directory (sample_mode/<tag> of --mode=sample) to
      # score; "": generate one from config.sample (resumable).
      samples="",
      num_samples=0,              # score the set's first N; 0: all of it
      reference_split="eval",     # input_pipeline split of the reference
      num_reference=0,            # its first N examples; 0: all
      # Classifier .npz of tools/train_classifier; "": look in the workdir
      # and ~/.cache/kflow_jax (none found: no classifier metrics).
      classifier="",
      # FID: pytorch-fid's .pth ("": $KFLOW_INCEPTION_WEIGHTS or
      # ~/.cache/kflow_jax/), its sha256 check (off only for test weights),
      # the reference statistics file, the preprocessing protocol.
      inception_weights="", check_weights_hash=True, fid_reference="",
      protocol="pytorch_fid", feature_batch_size=50,
      # During training: cheap metrics of train_num_samples fresh samples
      # every every_steps steps (0: off), and the spectrum / band-loss PNGs.
      every_steps=0, train_num_samples=256, plots=True))
