"""Molecular-assembly clusters that need no download: 17-molecule clusters
cut from the organic molecular crystals in pyxtal's database, read from the
installed wheel at run time (its coordinates come from the CSD: they are
never copied into this repository or written beside it by the tests).

For each crystal of one molecular species with one molecule in the
asymmetric unit (`usable`): a 4 x 4 x 4 supercell, molecules as the
connected components of covalent bonds (distance below 1.2 x the sum of the
covalent radii of data/atoms.py), whole molecules only, then the
molecule nearest the supercell's centre and its 16 nearest neighbours by
centroid: the `final` packing. The weakly correlated start (`perturb`,
seeded; COD-Cluster17's own start is not documented): every centroid moved
away from the cluster's centre by `expand` (1.5) plus Gaussian jitter
`jitter` angstrom (1.5), every molecule turned about its centroid by a
uniformly random rotation. Each molecule moves rigidly, so the cluster
passes data/cod_cluster17.check.

    clusters = crystal_clusters.load()             # pyxtal installed
    clusters = crystal_clusters.load(db="x.db")    # a database file
"""
import importlib.util
import json
import os
import sqlite3
from typing import Optional

import numpy as np

from kflow_jax.data import atoms
from kflow_jax.data import cod_cluster17

BOND_FACTOR = 1.2
SUPERCELL = 4


def database_path() -> str:
  """pyxtal's database/test.db in the installed wheel (pyxtal itself is
  not imported: it pulls in pymatgen)."""
  spec = importlib.util.find_spec("pyxtal")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
        "the offline molecular clusters are read from pyxtal's database: "
        "install it with `pip install --no-deps pyxtal==1.1.5` (its "
        "database only; pyxtal's own dependencies are not needed), or pass "
        "db= a database file of the same schema.")
  return os.path.join(spec.submodule_search_locations[0], "database",
                      "test.db")


def read_crystals(db: str) -> list:
  """[(name, numbers [n], positions [n, 3], cell [3, 3] rows, info)] from
  an ASE database file (table `systems`)."""
  if not os.path.exists(db):
    raise ValueError(f"no crystal database at {db!r}.")
  with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
    rows = con.execute("select numbers, positions, cell, key_value_pairs "
                       "from systems order by id").fetchall()
  out = []
  for numbers, positions, cell, kv in rows:
    info = json.loads(kv or "{}")
    out.append((str(info.get("csd_code", len(out))),
                np.frombuffer(numbers, np.int32).astype(np.int64),
                np.frombuffer(positions, np.float64).reshape(-1, 3),
                np.frombuffer(cell, np.float64).reshape(3, 3), info))
  return out


def usable(info: dict) -> bool:
  """One molecular species ('.'-free SMILES), Z' = 1."""
  smi = str(info.get("mol_smi", ""))
  return bool(smi) and "." not in smi and float(info.get("Zprime", 0)) == 1


def molecules(numbers, positions, bond_factor: float = BOND_FACTOR) -> list:
  """Index arrays of the connected components of covalent bonds (pairs
  closer than bond_factor x the sum of their covalent radii)."""
  # pylint: disable=g-import-not-at-top
  from scipy import sparse
  from scipy.sparse import csgraph
  from scipy.spatial import cKDTree
  # pylint: enable=g-import-not-at-top
  x = np.asarray(positions, np.float64)
  r = atoms.radii(numbers)
  pairs = cKDTree(x).query_pairs(bond_factor * 2 * float(r.max()),
                                 output_type="ndarray")
  d = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
  keep = pairs[d < bond_factor * (r[pairs[:, 0]] + r[pairs[:, 1]])]
  n = len(x)
  graph = sparse.coo_matrix((np.ones(len(keep)), (keep[:, 0], keep[:, 1])),
                            shape=(n, n))
  count, labels = csgraph.connected_components(graph, directed=False)
  return [np.flatnonzero(labels == k) for k in range(count)]


def cut_cluster(numbers, positions, cell, z: int,
                num: int = cod_cluster17.NUM_MOLECULES):
  """The `num` whole molecules nearest the centre of a supercell, as
  (numbers [num n], molecule [num n], positions [num n, 3]), atoms of every
  molecule in one order (the unit cell's); None when fewer whole
  molecules than `num` exist."""
  n_cell = len(numbers)
  size = n_cell // max(int(z), 1)
  shifts = np.stack(np.meshgrid(*[np.arange(SUPERCELL)] * 3,
                                indexing="ij"), -1).reshape(-1, 3)
  big = (positions[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
  big_z = np.tile(numbers, len(shifts))
  whole = [m for m in molecules(big_z, big) if len(m) == size]
  # One atom order for every copy: that of the molecule's atoms in the
  # unit cell (atom k of the cell sits at k mod n_cell in every image).
  key = lambda m: tuple(sorted(big_z[m].tolist()))
  ref = key(whole[0]) if whole else None
  whole = [m for m in whole if key(m) == ref]
  if len(whole) < num:
    return None
  cents = np.stack([big[m].mean(0) for m in whole])
  centre = big.mean(0)
  first = int(np.argmin(np.linalg.norm(cents - centre, axis=1)))
  order = np.argsort(np.linalg.norm(cents - cents[first], axis=1),
                     kind="stable")[:num]
  atoms = []
  for k in order:
    m = whole[k]
    # Atoms in the order of their unit-cell index within the molecule.
    atoms.append(m[np.argsort(m % n_cell, kind="stable")])
  idx = np.concatenate(atoms)
  if not all(np.array_equal(big_z[a], big_z[atoms[0]]) for a in atoms):
    return None
  return (big_z[idx], np.repeat(np.arange(num), size), big[idx])


def _rotation(rng) -> np.ndarray:
  q = rng.normal(size=4)
  w, x, y, z = q / np.linalg.norm(q)   # uniform on SO(3)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def perturb(positions, molecule, rng: np.random.Generator,
            expand: float = 1.5, jitter: float = 1.5) -> np.ndarray:
  """The weakly correlated start of a packed cluster (module doc)."""
  x = np.asarray(positions, np.float64)
  out = np.empty_like(x)
  centre = x.mean(0)
  for i in np.unique(molecule):
    m = molecule == i
    c = x[m].mean(0)
    new_c = centre + expand * (c - centre) + jitter * rng.normal(size=3)
    out[m] = (x[m] - c) @ _rotation(rng).T + new_c
  return out


def load(db: Optional[str] = None, seed: int = 0, draws: int = 1,
         expand: float = 1.5, jitter: float = 1.5) -> list:
  """cod_cluster17.Cluster list: every usable crystal's cluster, with
  `draws` seeded starts each (id "<csd code>_<draw>")."""
  rng = np.random.default_rng(seed)
  out = []
  for name, numbers, positions, cell, info in read_crystals(
      db or database_path()):
    if not usable(info):
      continue
    try:
      cut = cut_cluster(numbers, positions, cell, int(info.get("Z", 1)))
    except ValueError:   # an element without a covalent radius
      continue
    if cut is None:
      continue
    z, mol, final = cut
    for k in range(int(draws)):
      out.append(cod_cluster17.Cluster(
          f"{name}_{k}", z, mol,
          perturb(final, mol, rng, expand, jitter), final))
  return out
