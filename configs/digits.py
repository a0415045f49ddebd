r"""Digits 16x16 grey (sklearn's 8x8 digits, embedded: no download).

K-Flow against plain flow matching on the same data, backbone (U-Net-mu)
and budget (2000 steps, batch 64: a few minutes on a laptop CPU), each with
its best recipe of docs/results/recipe.md: flow matching with logit-normal
t; K-Flow with band I/O (the network sees only the bands started at t and
moves only the active ones, docs/method.md#band-io) and logit-normal t in
each band's local time.

Arguments (`--config=configs/digits.py:<args>`, comma separated):
  transform=NAME  identity (plain flow matching, one band), fourier
                  (default: two radial-frequency bands), dct, wavelet (Haar,
                  one level: approximation band then detail band), pca
                  (basis fitted on training data at the first start into
                  <workdir>/pca_basis.npz; two bands of eigenvalue rank)
  cond            class-conditional with classifier-free guidance: 10 % of
                  the training labels become the null class, samples use
                  CFG 1.5, grids hold one class per row
  runlocal        seconds on a CPU (tests, smoke runs)

  python -m kflow_jax.main --config=configs/digits.py --workdir=/tmp/digits
  python -m kflow_jax.main --config=configs/digits.py:transform=identity \
      --workdir=/tmp/digits_fm
  python -m kflow_jax.main --config=configs/digits.py:cond \
      --workdir=/tmp/digits_cfg
  # The paper's steering on the conditional run (each writes its own
  # sample_mode/step_..._<options>.{png,npz}):
  python -m kflow_jax.main --config=configs/digits.py:cond \
      --workdir=/tmp/digits_cfg --mode=sample \
      --config.sample.class_drop_t=0.3   # label only while t < 0.3
  # likewise --config.sample.guidance_bands=0 (CFG only in band 0) and
  # --config.sample.shared_bands=1 (one fine-band noise for all samples).
"""
from kflow_jax import config_lib

# Options of each transform on 16x16 digits.
TRANSFORMS = {
    "identity": {}, "fourier": {}, "dct": {}, "pca": {},
    "wavelet": dict(wavelet="haar", levels=1),
}


def get_config(arg=None):
  a = config_lib.parse_transform_args(arg, "configs/digits.py", TRANSFORMS,
                                      transform="fourier", cond=False,
                                      runlocal=False)
  c = config_lib.base()
  c.input.name = "digits"
  config_lib.set_bands(c, a.transform, 2, **TRANSFORMS[a.transform])
  c.total_steps = 2000
  c.batch_size = 64
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 200
  # The recipe study (docs/results/recipe.md, classifier FD at 800 steps):
  # logit-normal t was the best single change for both methods; for K-Flow,
  # band I/O with logit-normal t inside each band then beat it.
  c.loss.t_sampling = "logit_normal"
  if a.transform != "identity":
    c.path.hide_input = True
    c.path.project_output = True
    c.loss.t_sampling = "band_logit_normal"
  if a.cond:
    c.conditional = True
    # LFM's ImageNet label dropout (K-Flow's own is not published).
    c.label_dropout = 0.1
    c.sample.guidance = 1.5
    # 10 per class: a 10 x 10 grid, one class per row.
    c.sample.num_samples = 100
    c.sample.batch_size = 100
  if a.runlocal:
    c = config_lib.runlocal(c)
    if a.cond:
      # Two per class over two batches: exercises the class-row layout and
      # noise that must be shared across sampling batches.
      c.sample.num_samples = 20
      c.sample.batch_size = 10
  return c
