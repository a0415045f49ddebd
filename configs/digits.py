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
  slots           class-conditional with two condition slots (implies
                  cond): band 0 and band 1 each read their own label
                  (kflow_jax/flow/slots.py), trained with slot dropout
                  and 25 % band-mixed hybrids; --mode=hybrid draws the
                  coarse-by-fine grid
  captions        the slots of `slots` with the fine slot a caption: band
                  0 reads the class, band 1 the image's caption ("a
                  handwritten 3", "the digit three", ...;
                  kflow_jax/data/captions.py) through a small text
                  encoder trained with the model
                  (kflow_jax/flow/token_slots.py); sample with
                  --config.sample.slot_captions rows
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
  # A class slot on band 0, a caption slot on band 1; rows of (class,
  # caption), "" = null:
  python -m kflow_jax.main --config=configs/digits.py:captions \
      --workdir=/tmp/digits_captions
  python -m kflow_jax.main --config=configs/digits.py:captions \
      --workdir=/tmp/digits_captions --mode=sample \
      --config.sample.slot_captions='(("3", "a handwritten eight"), ("3", ""))'
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
                                      slots=False, captions=False,
                                      runlocal=False)
  c = config_lib.base()
  c.input.name = "digits"
  config_lib.set_bands(c, a.transform, 2, **TRANSFORMS[a.transform])
  return config_lib.digit_recipe(c, a.transform,
                                  cond=a.cond or a.slots or a.captions,
                                  local=a.runlocal, slots=a.slots,
                                  captions=a.captions)
