"""Molecular assembly metrics, computed as AssembleFlow's evaluator does
(docs/method.md#molecular-assembly-metrics).

A cluster is M rigid copies of one molecule (COD-Cluster17: M = 17), its
atoms in molecule order: positions [N, 3] in angstrom, atomic numbers [N],
molecule index [N]. For a predicted cluster against the true one:

  pm_atom     sqrt(mean over all N x N atom pairs of (D_true - D_pred)^2),
              D the distance matrix (diagonal and pairs inside a molecule
              included, as in AssembleFlow)
  pm_center   the same on the M x M matrix of the molecules' unweighted
              atom means
  collision   100 #{ordered pairs (a, b), a = b included: D_pred < r_a +
              r_b} / N^2 (%), r the covalent radii of `COVALENT_RADII`; the
              diagonal alone gives 100 / N %, and short bonds inside a
              molecule count too
  separation  100 x the share of the M (M - 1) / 2 molecule pairs whose
              closest atoms are more than 0.5 A apart (%), molecules taken
              as M contiguous blocks of N // M atoms

`aggregate` reduces many clusters (and repeats of each) the same way:
the minimum over a cluster's repeats, then the mean over clusters; the PM
means keep only valid values (finite and at most 100 A), each PM with its
own valid ratio; collision and separation average every cluster. A
prediction with NaN positions is invalid for PM and scores collision 0 %
and separation 0 %, as comparisons with NaN are false.
"""
from typing import Mapping, Sequence

import numpy as np

from kflow_jax.data import atoms
# The covalent radii of collision (AssembleFlow's table).
COVALENT_RADII = atoms.COVALENT_RADII

# PM values above this (angstrom) count as failed predictions.
VALID_PM = 100.0
SEPARATION_DISTANCE = 0.5


def packing_matching(true, pred) -> float:
  """RMS difference of the two distance matrices over all N x N pairs."""
  t, p = atoms.positions(true, "true"), atoms.positions(pred, "pred")
  if t.shape != p.shape:
    raise ValueError(f"true {t.shape} and pred {p.shape} must hold the same "
                     "atoms in the same order.")
  diff = atoms.distances(t) - atoms.distances(p)
  return float(np.sqrt(np.mean(np.square(diff))))


def centroids(x, molecule) -> np.ndarray:
  """[M, 3] unweighted atom means, molecules in order of their index."""
  x = atoms.positions(x, "positions")
  mol = np.asarray(molecule)
  ids = np.unique(mol)
  return np.stack([x[mol == i].mean(axis=0) for i in ids])


def collision(pred, numbers) -> float:
  """% of ordered atom pairs (diagonal included) closer than the sum of
  their covalent radii."""
  d = atoms.distances(pred)
  r = atoms.radii(numbers)
  if r.shape[0] != d.shape[0]:
    raise ValueError(f"{r.shape[0]} atomic numbers for {d.shape[0]} atoms.")
  return float(100.0 * np.sum((r[:, None] + r[None]) > d) / d.size)


def separation(pred, num_molecules: int = 17) -> float:
  """% of molecule pairs whose closest atoms are > 0.5 A apart; molecule i
  is atoms i n .. (i + 1) n - 1, n = N // num_molecules."""
  d = atoms.distances(pred)
  n, rest = divmod(d.shape[0], int(num_molecules))
  if rest or n < 1:
    raise ValueError(
        f"{d.shape[0]} atoms do not split into {num_molecules} molecules of "
        "equal size (AssembleFlow's clusters hold copies of one molecule).")
  pairs = [(i, j) for i in range(num_molecules)
           for j in range(i + 1, num_molecules)]
  apart = [np.min(d[i * n:(i + 1) * n, j * n:(j + 1) * n])
           > SEPARATION_DISTANCE for i, j in pairs]
  return float(100.0 * np.sum(apart) / len(pairs))


def cluster_metrics(true, pred, numbers, molecule) -> dict:
  """pm_atom, pm_center, collision, separation of one predicted cluster."""
  mol = np.asarray(molecule)
  m = len(np.unique(mol))
  return {
      "pm_atom": packing_matching(true, pred),
      "pm_center": packing_matching(centroids(true, mol),
                                    centroids(pred, mol)),
      "collision": collision(pred, numbers),
      "separation": separation(pred, m),
  }


def aggregate(per_cluster: Mapping[object, Sequence[dict]]) -> dict:
  """{cluster id: [cluster_metrics of each repeat]} -> the reported means:
  pm_atom, pm_center (valid values only), valid_atom, valid_center (their
  shares of clusters, %), collision, separation (all clusters), count."""
  if not per_cluster:
    raise ValueError("aggregate needs at least one cluster.")
  best = {k: {m: float(np.min([r[m] for r in reps]))
              for m in ("pm_atom", "pm_center", "collision", "separation")}
          for k, reps in per_cluster.items()}
  out = {"count": len(best)}
  for m, tag in (("pm_atom", "atom"), ("pm_center", "center")):
    v = np.asarray([b[m] for b in best.values()])
    ok = np.isfinite(v) & (v <= VALID_PM)
    out[m] = float(np.mean(v[ok])) if ok.any() else float("nan")
    out[f"valid_{tag}"] = float(100.0 * np.mean(ok))
  for m in ("collision", "separation"):
    out[m] = float(np.mean([b[m] for b in best.values()]))
  return out
