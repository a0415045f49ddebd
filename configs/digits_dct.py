"""Digits, DCT K-Flow: two bands of the orthonormal DCT-II (no wrap-around).

  python -m kflow_jax.main --config=configs/digits_dct.py --workdir=/tmp/digits_dct
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.digits("dct", arg)
