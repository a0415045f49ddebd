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

# Covalent radii (angstrom) by atomic number, the table AssembleFlow's
# collision uses (Cordero et al. 2008, carbon at its sp value 0.69).
COVALENT_RADII = {
    1: 0.31, 5: 0.84, 6: 0.69, 7: 0.71, 8: 0.66, 9: 0.57, 12: 1.41,
    13: 1.21, 14: 1.11, 15: 1.07, 16: 1.05, 17: 1.02, 21: 1.7, 22: 1.6,
    23: 1.53, 24: 1.39, 25: 1.39, 26: 1.32, 27: 1.26, 28: 1.24, 29: 1.32,
    30: 1.22, 31: 1.22, 32: 1.2, 33: 1.19, 34: 1.2, 35: 1.2, 36: 1.16,
    39: 1.9, 40: 1.75, 41: 1.64, 42: 1.54, 43: 1.47, 44: 1.46, 45: 1.42,
    46: 1.39, 47: 1.45, 48: 1.44, 49: 1.42, 50: 1.39, 51: 1.39, 52: 1.38,
    53: 1.39, 54: 1.4, 57: 2.07, 58: 2.04, 59: 2.03, 60: 2.01, 62: 1.98,
    63: 1.98, 64: 1.96, 65: 1.94, 66: 1.92, 67: 1.92, 68: 1.89, 69: 1.9,
    70: 1.87, 71: 1.87, 72: 1.75, 73: 1.7, 74: 1.62, 75: 1.51, 76: 1.44,
    77: 1.41, 78: 1.36, 79: 1.36, 80: 1.32, 81: 1.45, 82: 1.46, 83: 1.48,
    90: 2.06, 91: 2.0, 92: 1.96, 93: 1.9, 94: 1.87,
}
# PM values above this (angstrom) count as failed predictions.
VALID_PM = 100.0
SEPARATION_DISTANCE = 0.5


def _positions(x, name: str) -> np.ndarray:
  a = np.asarray(x, np.float64)
  if a.ndim != 2 or a.shape[1] != 3:
    raise ValueError(f"{name} must be positions [N, 3], got shape {a.shape}.")
  return a


def distances(x) -> np.ndarray:
  """[N, N] Euclidean distance matrix (float64)."""
  x = _positions(x, "positions")
  return np.sqrt(np.sum(np.square(x[:, None] - x[None]), axis=-1))


def packing_matching(true, pred) -> float:
  """RMS difference of the two distance matrices over all N x N pairs."""
  t, p = _positions(true, "true"), _positions(pred, "pred")
  if t.shape != p.shape:
    raise ValueError(f"true {t.shape} and pred {p.shape} must hold the same "
                     "atoms in the same order.")
  return float(np.sqrt(np.mean(np.square(distances(t) - distances(p)))))


def centroids(x, molecule) -> np.ndarray:
  """[M, 3] unweighted atom means, molecules in order of their index."""
  x = _positions(x, "positions")
  mol = np.asarray(molecule)
  ids = np.unique(mol)
  return np.stack([x[mol == i].mean(axis=0) for i in ids])


def radii(numbers) -> np.ndarray:
  z = np.asarray(numbers, np.int64).reshape(-1)
  missing = sorted({int(v) for v in z} - set(COVALENT_RADII))
  if missing:
    raise ValueError(
        f"no covalent radius for atomic number(s) {missing} in "
        "assembly.COVALENT_RADII (AssembleFlow's table); such clusters "
        "cannot be scored for collision the way it scores them.")
  return np.asarray([COVALENT_RADII[int(v)] for v in z], np.float64)


def collision(pred, numbers) -> float:
  """% of ordered atom pairs (diagonal included) closer than the sum of
  their covalent radii."""
  d = distances(pred)
  r = radii(numbers)
  if r.shape[0] != d.shape[0]:
    raise ValueError(f"{r.shape[0]} atomic numbers for {d.shape[0]} atoms.")
  return float(100.0 * np.sum((r[:, None] + r[None]) > d) / d.size)


def separation(pred, num_molecules: int = 17) -> float:
  """% of molecule pairs whose closest atoms are > 0.5 A apart; molecule i
  is atoms i n .. (i + 1) n - 1, n = N // num_molecules."""
  d = distances(pred)
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
