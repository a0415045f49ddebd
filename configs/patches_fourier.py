"""Natural patches 16x16 RGB, Fourier K-Flow: three radial bands with energy-aware band times (gamma 0.5).

  python -m kflow_jax.main --config=configs/patches_fourier.py --workdir=/tmp/patches_fourier
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.patches("fourier", arg)
