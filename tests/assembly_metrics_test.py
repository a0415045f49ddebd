"""AssembleFlow's metrics (kflow_jax/evaluators/assembly.py) against values
worked out by hand on tiny clusters."""
import numpy as np
import pytest

from kflow_jax.evaluators import assembly


def _rotation(seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  return q * np.sign(np.linalg.det(q))


def test_packing_matching_by_hand_and_rigid_invariance():
  true = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
  # A rigid motion of the whole cluster keeps every distance: 0.
  moved = true @ _rotation(0).T + np.array([3.0, -1.0, 2.0])
  assert assembly.packing_matching(true, moved) == pytest.approx(0, abs=1e-12)
  # Atom 1 moved from x = 1 to x = 2: D01 1 -> 2, D12 sqrt(5) -> sqrt(8);
  # each appears twice among the 9 ordered pairs.
  pred = true.copy()
  pred[1, 0] = 2.0
  want = np.sqrt(2 * ((2 - 1) ** 2 + (np.sqrt(8) - np.sqrt(5)) ** 2) / 9)
  assert assembly.packing_matching(true, pred) == pytest.approx(want)
  with pytest.raises(ValueError, match="same atoms"):
    assembly.packing_matching(true, pred[:2])


def test_collision_counts_the_diagonal_and_ordered_pairs():
  h2 = np.array([[0.0, 0, 0], [0.5, 0, 0]])
  # H radius 0.31: 0.62 > 0.5, so both ordered pairs and the 2 diagonal
  # entries collide: 4 of 4.
  assert assembly.collision(h2, [1, 1]) == pytest.approx(100.0)
  # 1.0 apart: only the diagonal, 2 of 4.
  assert assembly.collision(h2 * 2, [1, 1]) == pytest.approx(50.0)
  # C-H at 1.0 A: 0.69 + 0.31 = 1.0 is not > 1.0 (strict), diagonal only.
  assert assembly.collision(h2 * 2, [6, 1]) == pytest.approx(50.0)
  with pytest.raises(ValueError, match="atomic number"):
    assembly.collision(h2, [1, 2])  # helium: not in the table
  assert assembly.COVALENT_RADII[6] == 0.69  # AssembleFlow's carbon


def test_separation_of_contiguous_blocks():
  # 3 molecules of 2 atoms: molecules 0 and 1 touch (0.4 A), 2 is far.
  x = np.array([[0.0, 0, 0], [0.0, 1, 0],
                [0.4, 0, 0], [0.4, 1, 0],
                [9.0, 0, 0], [9.0, 1, 0]])
  assert assembly.separation(x, 3) == pytest.approx(100.0 * 2 / 3)
  with pytest.raises(ValueError, match="equal size"):
    assembly.separation(x[:5], 3)


def test_cluster_metrics_and_aggregation_as_assembleflow():
  rng = np.random.default_rng(1)
  mol = np.repeat(np.arange(17), 2)
  true = rng.normal(size=(34, 3)) * 10
  numbers = np.tile([6, 1], 17)
  perfect = assembly.cluster_metrics(true, true, numbers, mol)
  assert perfect["pm_atom"] == pytest.approx(0, abs=1e-12)
  assert perfect["pm_center"] == pytest.approx(0, abs=1e-12)
  # At least the diagonal: 100 / N %.
  assert perfect["collision"] >= 100.0 / 34
  shifted = true + rng.normal(size=true.shape)
  worse = assembly.cluster_metrics(true, shifted, numbers, mol)
  assert worse["pm_atom"] > 0 and worse["pm_center"] > 0
  nan = assembly.cluster_metrics(true, np.full_like(true, np.nan), numbers,
                                 mol)
  assert np.isnan(nan["pm_atom"]) and nan["collision"] == 0
  assert nan["separation"] == 0
  far = assembly.cluster_metrics(true, true * 50, numbers, mol)
  assert far["pm_atom"] > assembly.VALID_PM
  out = assembly.aggregate({"a": [worse, perfect], "b": [nan], "c": [far]})
  # Cluster a: the minimum over its repeats (the perfect one); b (NaN) and
  # c (> 100 A) are invalid for PM but count in collision / separation.
  assert out["pm_atom"] == pytest.approx(0, abs=1e-12)
  assert out["valid_atom"] == pytest.approx(100 / 3)
  assert out["collision"] == pytest.approx(
      (min(worse["collision"], perfect["collision"]) + 0
       + far["collision"]) / 3)
  assert out["count"] == 3
