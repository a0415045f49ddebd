"""The COD-Cluster17 reader on tiny clusters the test writes in the
published layout: AssembleFlow's filters, subsets and split."""
import os
import random

import numpy as np
import pytest

from kflow_jax.data import atoms
from kflow_jax.data import cod_cluster17 as cod

TETRA = np.array([[0.0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]])
FLAT = np.array([[0.0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [1.1, 1.1, 0]])


def _rot(rng):
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  return q * np.sign(np.linalg.det(q))


def _write(root, cid, molecule=TETRA, n=17, rigid=True, seed=0):
  rng = np.random.default_rng(seed)
  rows_a, rows_b = [], []
  for i in range(n):
    a = molecule @ _rot(rng).T + rng.normal(size=3) * 5
    b = a @ _rot(rng).T + rng.normal(size=3)
    if not rigid and i == 3:
      b = b + np.array([[0, 0, 0], [0.3, 0, 0], [0, 0, 0], [0, 0, 0]])
    for k, sym in enumerate(["C", "H", "H", "H"]):
      rows_a.append(f"{i},{sym},{a[k, 0]},{a[k, 1]},{a[k, 2]}")
      rows_b.append(f"{i},{sym},{b[k, 0]},{b[k, 1]},{b[k, 2]}")
  for name, rows in ((cod.INITIAL, rows_a), (cod.FINAL, rows_b)):
    f = os.path.join(root, name.format(cid))
    os.makedirs(os.path.dirname(f), exist_ok=True)
    with open(f, "w") as fh:
      fh.write("mol_idx,atom_type,x,y,z\n" + "\n".join(rows) + "\n")


def test_load_keeps_what_assembleflow_keeps(tmp_path):
  root = str(tmp_path)
  _write(root, "100", seed=1)
  _write(root, "101", molecule=FLAT, seed=2)
  _write(root, "102", rigid=False, seed=3)
  _write(root, "103", n=16, seed=4)
  kept, dropped = cod.load(root)
  assert [c.id for c in kept] == ["100"]
  assert "flat" in dropped["101"] and "rigidly" in dropped["102"]
  assert "16 molecules" in dropped["103"]
  c = kept[0]
  assert c.initial.shape == (68, 3) and c.numbers[:4].tolist() == [6, 1, 1, 1]
  # Each molecule moved rigidly: Kabsch maps it exactly.
  m = c.molecule == 5
  r, t, rmsd = atoms.kabsch(c.initial[m], c.final[m])
  assert rmsd < 1e-9 and np.linalg.det(r) == pytest.approx(1.0)
  # Without AssembleFlow's flat-molecule filter the planar cluster stays.
  kept, _ = cod.load(root, af_compat=False)
  assert [c.id for c in kept] == ["100", "101"]


def test_subset_lists_and_missing_data_name_the_fix(tmp_path):
  root = str(tmp_path)
  for i in range(3):
    _write(root, f"{200 + i}", seed=i)
  os.makedirs(tmp_path / "processed_5000")
  (tmp_path / "processed_5000" / "valid_idx.txt").write_text("200\n202\n")
  assert cod.cluster_ids(root, 5000) == ["200", "202"]
  with pytest.raises(ValueError, match="processed_10000"):
    cod.cluster_ids(root, 10000)
  with pytest.raises(ValueError, match="raw/FinalPositions"):
    cod.cluster_ids(str(tmp_path / "nowhere"))


def test_split_is_assembleflows_seeded_shuffle():
  items = list(range(1000, 1057))
  train, valid, test = cod.split(items, seed=42)
  order = list(range(57))
  random.seed(42)
  random.shuffle(order)  # AssembleFlow's own calls
  assert train == [items[i] for i in order[:45]]
  assert valid == [items[i] for i in order[45:50]]
  assert test == [items[i] for i in order[50:]]
  assert random.Random(0).random() == random.Random(0).random()


def test_bad_rows_and_elements():
  with pytest.raises(ValueError, match="unknown element"):
    atoms.atomic_number("Xx")
  assert atoms.atomic_number("cl") == 17 and atoms.atomic_number("Br") == 35
