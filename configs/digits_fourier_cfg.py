r"""Digits, class-conditional Fourier K-Flow with classifier-free guidance.

Same data, bands and U-Net-mu as digits_fourier (a few minutes on this
CPU), plus labels: 10% of the training labels become the null class so one
model gives both v_c and v_u, and samples use the paper's CFG scale 1.5.
Sample grids hold one class per row (labels 0..9 repeated; the .npz of
--mode=sample stores them).

  python -m kflow_jax.main --config=configs/digits_fourier_cfg.py \
      --workdir=/tmp/digits_cfg
  # The paper's steering experiments on the trained run (each writes its
  # own sample_mode/step_..._<options>.{png,npz}):
  python -m kflow_jax.main --config=configs/digits_fourier_cfg.py \
      --workdir=/tmp/digits_cfg --mode=sample \
      --config.sample.class_drop_t=0.3   # label only while t < 0.3
  # likewise --config.sample.guidance_bands=0 (CFG only in band 0) and
  # --config.sample.shared_bands=1 (one fine-band noise for all samples).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  local = common.parse_arg(arg)
  c = common.digits("fourier", None)
  c.conditional = True
  # LFM's ImageNet label dropout (paper_notes: K-Flow's own is unknown).
  c.label_dropout = 0.1
  c.sample.guidance = 1.5
  # 10 per class: a 10 x 10 grid, one class per row.
  c.sample.num_samples = 100
  c.sample.batch_size = 100
  if local:
    c = common.runlocal(c)
    # Two per class over two batches: exercises the class-row layout and
    # noise that must be shared across sampling batches.
    c.sample.num_samples = 20
    c.sample.batch_size = 10
  return c
