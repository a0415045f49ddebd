"""Molecular clusters as training and evaluation arrays (config.data of
configs/molecules.py and configs/cod_cluster17.py).

`splits(cfg)` reads the clusters of `cfg.source` and splits them:
  proxy          data/crystal_clusters.py (pyxtal's crystals, no download);
                 the split is over crystals (AssembleFlow's seeded 80/10/10
                 on the crystal names), so no crystal of the test split is
                 seen in training under another start; `draws` seeded
                 starts per crystal
  cod_cluster17  data/cod_cluster17.py from `root` (subset -1 / 5000 /
                 10000), AssembleFlow's filters and split over clusters
The starts are drawn from `cfg.seed`, not the run's seed: runs of several
seeds see the same clusters, so their scores pair.

`arrays(clusters, ...)` turns clusters into the rigid poses of
flow/rigid.py: each cluster shifted so its start centroids have mean 0
(`shift` keeps the offset, for writing files in the data's own frame),
molecule i's atoms at the start minus its centroid (`body`, world axes,
padded with type 0), the start and final centroids `c0`, `c1`, the
rotation from start to final `r1` (Kabsch), the two frame atoms of
models/cluster_gnn.ClusterNet, and the graph-Fourier band projectors of
the start centroids (kamp/molecular.py), zero-padded to len(starts) bands
when a cut falls inside a repeated eigenvalue.
"""
from typing import Sequence

import numpy as np

from kflow_jax.data import atoms
from kflow_jax.data import cod_cluster17
from kflow_jax.data import crystal_clusters
from kflow_jax.kamp import molecular

SOURCES = ("proxy", "cod_cluster17")
# Atoms closer than this (angstrom) to the farthest distance from the
# centroid count as tied: the first index wins, so float round-off in a
# rotated copy cannot change the choice.
TIE = 1e-3
# A molecule whose atoms all lie this close (angstrom) to one line through
# its centroid has no frame from two atoms.
MIN_SPREAD = 0.1


def splits(cfg) -> tuple:
  """(train, valid, test) lists of cod_cluster17.Cluster for config.data."""
  if cfg.source not in SOURCES:
    raise ValueError(f"config.data.source={cfg.source!r} is not one of "
                     f"{SOURCES}.")
  if cfg.source == "cod_cluster17":
    if not cfg.root:
      raise ValueError(
          "config.data.root is empty: set it to the COD-Cluster17 folder "
          "holding raw/FinalPositions and raw/InitialPositions "
          "(--config.data.root=DIR; the data set is downloaded by hand "
          "from huggingface.co/datasets/chao1224/CrystalFlow, folder COD/).")
    kept, _ = cod_cluster17.load(cfg.root, int(cfg.subset),
                                 bool(cfg.af_compat),
                                 None if cfg.limit < 0 else int(cfg.limit))
    if not kept:
      raise ValueError(f"no usable COD-Cluster17 cluster under "
                       f"{cfg.root!r}.")
    return cod_cluster17.split(kept, int(cfg.split_seed))
  if int(cfg.draws) < 1:
    raise ValueError(f"config.data.draws must be >= 1, got {cfg.draws}.")
  clusters = crystal_clusters.load(cfg.db or None, seed=int(cfg.seed),
                                   draws=int(cfg.draws),
                                   expand=float(cfg.expand),
                                   jitter=float(cfg.jitter))
  crystal = lambda c: c.id.rsplit("_", 1)[0]
  names = sorted({crystal(c) for c in clusters})
  if cfg.limit >= 0:
    names = names[:int(cfg.limit)]
  parts = cod_cluster17.split(names, int(cfg.split_seed))
  return tuple([c for c in clusters if crystal(c) in set(p)] for p in parts)


def frame_atoms(body) -> tuple:
  """(a, b): the atom farthest from the centroid and the atom farthest
  from the line through it, ties to the first index (TIE); body [n, 3]
  centred atoms of one molecule."""
  x = np.asarray(body, np.float64)
  d = np.linalg.norm(x, axis=1)
  a = int(np.flatnonzero(d >= d.max() - TIE)[0])
  u = x[a] / max(d[a], 1e-12)
  perp = np.linalg.norm(x - np.outer(x @ u, u), axis=1)
  if perp.max() < MIN_SPREAD:
    raise ValueError("a molecule whose atoms lie on one line has no frame "
                     "of two atoms; such clusters are not supported.")
  b = int(np.flatnonzero(perp >= perp.max() - TIE)[0])
  return a, b


def pose(cluster, num_atoms: int, starts: Sequence[int]) -> dict:
  """The arrays of one cluster (module doc); num_atoms pads each
  molecule's atoms."""
  mol = np.asarray(cluster.molecule)
  m = cod_cluster17.NUM_MOLECULES
  n = len(mol) // m
  if n > num_atoms:
    raise ValueError(f"cluster {cluster.id} has {n} atoms per molecule, "
                     f"more than the padding {num_atoms}.")
  x0 = np.asarray(cluster.initial, np.float64).reshape(m, n, 3)
  x1 = np.asarray(cluster.final, np.float64).reshape(m, n, 3)
  c0, c1 = x0.mean(1), x1.mean(1)
  shift = c0.mean(0)
  body = x0 - c0[:, None]
  r1 = np.stack([atoms.kabsch(body[i], x1[i] - c1[i])[0] for i in range(m)])
  types = np.zeros((m, num_atoms), np.int32)
  types[:, :n] = np.asarray(cluster.numbers).reshape(m, n)
  padded = np.zeros((m, num_atoms, 3))
  padded[:, :n] = body
  proj = molecular.band_projectors(c0, starts)
  full = np.zeros((len(starts), m, m))
  full[:len(proj)] = proj
  return dict(types=types, body=padded.astype(np.float32),
              frame=np.asarray(frame_atoms(body[0]), np.int32),
              c0=(c0 - shift).astype(np.float32),
              c1=(c1 - shift).astype(np.float32),
              r1=r1.astype(np.float32), proj=full.astype(np.float32),
              shift=shift.astype(np.float32))


def arrays(clusters, num_atoms: int, starts: Sequence[int]) -> dict:
  """Every cluster's `pose`, stacked on a leading axis."""
  if not clusters:
    raise ValueError("no clusters to build arrays from.")
  per = [pose(c, num_atoms, starts) for c in clusters]
  return {k: np.stack([p[k] for p in per]) for k in per[0]}


def atoms_of(body, c, r) -> np.ndarray:
  """[M, n, 3] atoms of poses (c [M, 3], r [M, 3, 3] since the start) of
  bodies [M, n, 3]."""
  return np.einsum("mij,mnj->mni", np.asarray(r, np.float64),
                   np.asarray(body, np.float64)) + np.asarray(c)[:, None]
