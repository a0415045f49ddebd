"""Digits, plain flow matching (identity transform, one band): the baseline.

  python -m kflow_jax.main --config=configs/digits_fm.py --workdir=/tmp/digits_fm
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.digits("identity", arg)
