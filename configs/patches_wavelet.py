"""Natural patches 16x16 RGB, wavelet K-Flow: db4, 2 levels = three bands, energy-aware band times.

  python -m kflow_jax.main --config=configs/patches_wavelet.py --workdir=/tmp/patches_wavelet
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.patches("wavelet", arg, wavelet="db4", levels=2)
