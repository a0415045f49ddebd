"""COD-Cluster17 (AssembleFlow's molecular-assembly data), read from its
published layout.

Each cluster is 17 copies of one rigid molecule: a weakly correlated start
and the crystal-like packing to predict, in two CSV files under ROOT:

  raw/InitialPositions/{id}_cluster16_noised.csv
  raw/FinalPositions/{id}_cluster16.csv

each a header line, then rows `mol_idx,atom_type,x,y,z` (element symbol,
angstrom). The data set is downloaded by hand (AssembleFlow's README:
huggingface.co/datasets/chao1224/CrystalFlow, folder COD/); nothing here
reaches the network.

`load(root, subset=-1)` keeps the clusters AssembleFlow keeps (`check`):
17 molecules of equal atom counts with the same atoms in both files, every
molecule moved rigidly (its final atoms a rotation and translation of its
initial ones: Kabsch RMSD at most `RIGID_TOLERANCE` of the molecule's size;
AssembleFlow checks the same with inertial frames), and with `af_compat`
(default) no flat molecule (rank of its centred initial atoms < 3), which
AssembleFlow's inertial frames cannot handle. `split` is AssembleFlow's
seeded 80/10/10 split of the kept ids; subset 5000 / 10000 reads the id
list `processed_{subset}/valid_idx.txt` as AssembleFlow does. A missing
folder is one error saying where the files go.
"""
import csv
import os
import random
from typing import NamedTuple, Optional, Sequence

import numpy as np

from kflow_jax.data import atoms

NUM_MOLECULES = 17
# Final atoms within this fraction of the molecule's radius of gyration of
# a rigid motion of its initial atoms (AssembleFlow's tolerance is 1e-3 A
# on frame-normalised coordinates).
RIGID_TOLERANCE = 1e-3
INITIAL = os.path.join("raw", "InitialPositions", "{}_cluster16_noised.csv")
FINAL = os.path.join("raw", "FinalPositions", "{}_cluster16.csv")


class Cluster(NamedTuple):
  """One cluster: atoms in molecule order (molecule i holds atoms
  i n .. (i + 1) n - 1)."""
  id: str
  numbers: np.ndarray     # int [N] atomic numbers
  molecule: np.ndarray    # int [N] molecule index 0..16
  initial: np.ndarray     # float64 [N, 3]
  final: np.ndarray       # float64 [N, 3]


def read_csv(path: str):
  """(molecule [N], numbers [N], positions [N, 3]) of one file, sorted by
  molecule index (stable: atom order inside a molecule is kept)."""
  with open(path, newline="") as fh:
    rows = list(csv.reader(fh))[1:]
  try:
    mol = np.asarray([int(r[0]) for r in rows], np.int64)
    z = np.asarray([atoms.atomic_number(r[1]) for r in rows], np.int64)
    x = np.asarray([[float(v) for v in r[2:5]] for r in rows], np.float64)
  except (IndexError, ValueError) as e:
    raise ValueError(f"{path}: rows must be mol_idx,atom_type,x,y,z "
                     f"({e}).") from None
  order = np.argsort(mol, kind="stable")
  return mol[order], z[order], x[order]


def check(cluster: Cluster, af_compat: bool = True) -> Optional[str]:
  """None if AssembleFlow would keep the cluster, else why not."""
  mol = cluster.molecule
  ids, counts = np.unique(mol, return_counts=True)
  if len(ids) != NUM_MOLECULES:
    return f"{len(ids)} molecules, not {NUM_MOLECULES}"
  if len(set(counts.tolist())) != 1:
    return f"molecules of unequal atom counts {sorted(set(counts.tolist()))}"
  for i in ids:
    m = mol == i
    a, b = cluster.initial[m], cluster.final[m]
    centred = a - a.mean(0)
    if af_compat and np.linalg.matrix_rank(centred) < 3:
      return f"molecule {i} is flat"
    size = max(float(np.sqrt(np.mean(np.sum(centred ** 2, -1)))), 1e-6)
    if atoms.kabsch(a, b)[2] > RIGID_TOLERANCE * max(size, 1.0):
      return f"molecule {i} does not move rigidly"
  return None


def read_cluster(root: str, cid: str) -> Cluster:
  mol_a, z_a, x_a = read_csv(os.path.join(root, INITIAL.format(cid)))
  mol_b, z_b, x_b = read_csv(os.path.join(root, FINAL.format(cid)))
  if not (np.array_equal(mol_a, mol_b) and np.array_equal(z_a, z_b)):
    raise ValueError(f"cluster {cid}: the initial and final files hold "
                     "different atoms.")
  return Cluster(cid, z_a, mol_a, x_a, x_b)


def cluster_ids(root: str, subset: int = -1) -> list:
  """Sorted ids with both files; subset N: the ids of
  processed_N/valid_idx.txt, as AssembleFlow's subsets."""
  final_dir = os.path.join(root, "raw", "FinalPositions")
  if not os.path.isdir(final_dir):
    raise ValueError(
        f"no COD-Cluster17 data under {root!r}: put the data set's "
        "raw/FinalPositions/*.csv and raw/InitialPositions/*.csv there "
        "(downloaded by hand from huggingface.co/datasets/chao1224/"
        "CrystalFlow, folder COD/) and pass that folder.")
  suffix = "_cluster16.csv"
  ids = sorted(f[:-len(suffix)] for f in os.listdir(final_dir)
               if f.endswith(suffix)
               and os.path.exists(os.path.join(root, INITIAL.format(
                   f[:-len(suffix)]))))
  if subset != -1:
    listing = os.path.join(root, f"processed_{int(subset)}", "valid_idx.txt")
    if not os.path.exists(listing):
      raise ValueError(
          f"subset {subset} of COD-Cluster17 is the id list {listing!r}, "
          "which is missing; copy it from the data set's processed_"
          f"{subset}/ folder, or use subset=-1 (all clusters).")
    with open(listing) as fh:
      wanted = {line.strip() for line in fh if line.strip()}
    ids = [i for i in ids if i in wanted]
  return ids


def load(root: str, subset: int = -1, af_compat: bool = True,
         limit: Optional[int] = None):
  """(kept clusters in id order, {id: why dropped})."""
  kept, dropped = [], {}
  for cid in cluster_ids(root, subset)[:limit]:
    c = read_cluster(root, cid)
    why = check(c, af_compat)
    if why is None:
      kept.append(c)
    else:
      dropped[cid] = why
  return kept, dropped


def split(items: Sequence, seed: int = 0,
          fractions=(0.8, 0.1, 0.1)) -> tuple:
  """AssembleFlow's split: range(n) shuffled by Python's random seeded
  with `seed` (its own generator: the same order as random.seed(seed);
  random.shuffle, without touching the global one); train, valid, test by
  int() of the fractions."""
  n = len(items)
  order = list(range(n))
  random.Random(seed).shuffle(order)
  a = int(fractions[0] * n)
  b = a + int(fractions[1] * n)
  pick = lambda idx: [items[i] for i in idx]
  return pick(order[:a]), pick(order[a:b]), pick(order[b:])
