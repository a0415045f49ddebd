"""Atoms: element symbols, covalent radii, distance matrices and the
Kabsch fit, shared by the molecular data sets (data/cod_cluster17.py,
data/crystal_clusters.py) and their metrics (evaluators/assembly.py)."""
import numpy as np

ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co "
    "Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb "
    "Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re "
    "Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu").split()

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

def atomic_number(symbol: str) -> int:
  s = symbol.strip()
  s = s[:1].upper() + s[1:].lower()
  if s not in ELEMENTS:
    raise ValueError(f"unknown element symbol {symbol!r}.")
  return ELEMENTS.index(s) + 1


def positions(x, name: str) -> np.ndarray:
  """float64 [N, 3], or a ValueError naming the array."""
  a = np.asarray(x, np.float64)
  if a.ndim != 2 or a.shape[1] != 3:
    raise ValueError(f"{name} must be positions [N, 3], got shape {a.shape}.")
  return a


def distances(x) -> np.ndarray:
  """[N, N] Euclidean distance matrix (float64)."""
  x = positions(x, "positions")
  return np.sqrt(np.sum(np.square(x[:, None] - x[None]), axis=-1))




def radii(numbers) -> np.ndarray:
  """Covalent radii [N] of atomic numbers (refused: elements the table
  lacks)."""
  z = np.asarray(numbers, np.int64).reshape(-1)
  missing = sorted({int(v) for v in z} - set(COVALENT_RADII))
  if missing:
    raise ValueError(
        f"no covalent radius for atomic number(s) {missing} in "
        "data/atoms.COVALENT_RADII (AssembleFlow's table); such clusters "
        "cannot be scored for collision the way it scores them.")
  return np.asarray([COVALENT_RADII[int(v)] for v in z], np.float64)


def kabsch(a, b):
  """(R, t, rmsd): the rotation R (det +1) and translation t that best map
  points a [n, 3] onto b [n, 3] (b ~ a R^T + t), and the RMSD left."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  ca, cb = a.mean(0), b.mean(0)
  h = (a - ca).T @ (b - cb)
  u, _, vt = np.linalg.svd(h)
  d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
  r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
  t = cb - ca @ r.T
  rmsd = float(np.sqrt(np.mean(np.sum(np.square(a @ r.T + t - b), -1))))
  return r, t, rmsd


def write_xyz(path: str, numbers, x, comment: str = "") -> None:
  """An extended-XYZ-free plain .xyz file (atom count, comment, then
  `symbol x y z` rows in angstrom), which ASE, VMD, Avogadro, Ovito and
  PyMOL open."""
  z = np.asarray(numbers)
  x = np.asarray(x, np.float64)
  lines = [str(len(z)), " ".join(str(comment).split())]
  lines += [f"{ELEMENTS[int(v) - 1]:<2s} {a:12.6f} {b:12.6f} {c:12.6f}"
            for v, (a, b, c) in zip(z, x)]
  with open(path, "w") as fh:
    fh.write("\n".join(lines) + "\n")
