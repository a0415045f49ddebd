"""Natural patches 16x16 RGB, PCA K-Flow: basis fitted into the workdir at the first start, three bands by eigenvalue rank, energy-aware band times.

  python -m kflow_jax.main --config=configs/patches_pca.py --workdir=/tmp/patches_pca
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.patches("pca", arg)
