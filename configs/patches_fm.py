"""Natural patches 16x16 RGB, plain flow matching (identity, one band): the baseline.

  python -m kflow_jax.main --config=configs/patches_fm.py --workdir=/tmp/patches_fm
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.patches("identity", arg)
