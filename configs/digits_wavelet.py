"""Digits, wavelet K-Flow: Haar DWT, 1 level on 16x16 = approximation band
then detail band (two bands).

  python -m kflow_jax.main --config=configs/digits_wavelet.py --workdir=/tmp/digits_wavelet
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.digits("wavelet", arg, wavelet="haar", levels=1)
