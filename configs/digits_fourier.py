"""Digits, Fourier K-Flow: two radial-frequency bands, coarse first.

  python -m kflow_jax.main --config=configs/digits_fourier.py --workdir=/tmp/digits_fourier
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.digits("fourier", arg)
