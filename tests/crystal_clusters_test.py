"""Offline molecular clusters (kflow_jax/data/crystal_clusters.py): on a
crystal database the test writes in the ASE schema, and on pyxtal's when
it is installed (read at run time, never copied)."""
import importlib.util
import json
import sqlite3

import numpy as np
import pytest

from kflow_jax.data import atoms
from kflow_jax.data import cod_cluster17 as cod
from kflow_jax.data import crystal_clusters as cc
from kflow_jax.evaluators import assembly

# A methane-like molecule: C with 4 H at 1.09 A.
CH4 = np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])


def _db(path, crystals):
  with sqlite3.connect(path) as con:
    con.execute("create table systems (id integer primary key, numbers "
                "blob, positions blob, cell blob, key_value_pairs text)")
    for numbers, positions, cell, info in crystals:
      con.execute("insert into systems (numbers, positions, cell, "
                  "key_value_pairs) values (?, ?, ?, ?)",
                  (np.asarray(numbers, np.int32).tobytes(),
                   np.asarray(positions, np.float64).tobytes(),
                   np.asarray(cell, np.float64).tobytes(), json.dumps(info)))


def test_clusters_from_a_written_database(tmp_path):
  db = str(tmp_path / "crystals.db")
  cell = np.diag([4.0, 4.5, 5.0])
  two = np.concatenate([CH4, CH4 @ np.diag([1, -1, -1]) + [2.0, 2.2, 2.5]])
  _db(db, [
      ([6, 1, 1, 1, 1], CH4, cell, {"csd_code": "ONE", "mol_smi": "C",
                                    "Z": 1, "Zprime": 1}),
      ([6, 1, 1, 1, 1] * 2, two, cell, {"csd_code": "TWO", "mol_smi": "C",
                                        "Z": 2, "Zprime": 1}),
      ([6, 1, 1, 1, 1], CH4, cell, {"csd_code": "SALT", "mol_smi": "C.O",
                                    "Z": 1, "Zprime": 1}),
  ])
  clusters = cc.load(db=db, seed=3, draws=2)
  assert sorted(c.id for c in clusters) == ["ONE_0", "ONE_1", "TWO_0",
                                            "TWO_1"]
  for c in clusters:
    assert c.final.shape == (85, 3) and cod.check(c) is None
    # The packing: 17 whole molecules, the nearest neighbours of the centre
    # one; every copy keeps the molecule's shape.
    for i in range(17):
      m = c.molecule == i
      assert atoms.kabsch(CH4, c.final[m])[2] < 1e-9
      assert atoms.kabsch(c.final[m], c.initial[m])[2] < 1e-9
    # The start is weakly correlated: centroids pushed apart and jittered.
    spread = lambda x: np.linalg.norm(
        assembly.centroids(x, c.molecule) - x.mean(0), axis=1).mean()
    assert spread(c.initial) > 1.2 * spread(c.final)
  # Seeded: the same call gives the same starts.
  again = cc.load(db=db, seed=3, draws=2)
  np.testing.assert_array_equal(clusters[0].initial, again[0].initial)


def test_missing_database_names_the_fix(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="no crystal database"):
    cc.read_crystals(str(tmp_path / "none.db"))
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match="pyxtal==1.1.5"):
    cc.database_path()


@pytest.mark.skipif(importlib.util.find_spec("pyxtal") is None,
                    reason="pyxtal not installed (pip install --no-deps "
                           "pyxtal==1.1.5; .ci/run does)")
def test_pyxtal_crystals_give_rigid_17_molecule_clusters():
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  clusters = cc.load(seed=0)
  if metadata.version("pyxtal") == "1.1.5":   # the count docs/method.md gives
    assert len(clusters) == 49
    sizes = [len(c.numbers) // 17 for c in clusters]
    assert (min(sizes), max(sizes)) == (5, 76)
  for c in clusters:
    assert cod.check(c, af_compat=False) is None, c.id
    assert len(np.unique(c.molecule)) == 17
