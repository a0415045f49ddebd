"""Digits, PCA K-Flow: the basis is fitted on training data at the first
start into <workdir>/pca_basis.npz and reused on resume; two bands of
eigenvalue rank.

  python -m kflow_jax.main --config=configs/digits_pca.py --workdir=/tmp/digits_pca
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import common  # noqa: E402


def get_config(arg=None):
  return common.digits("pca", arg)
