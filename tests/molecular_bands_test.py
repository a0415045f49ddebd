"""Graph-Fourier bands over the molecules of a cluster
(kflow_jax/kamp/molecular.py): exact projectors, equivariance."""
import numpy as np
import pytest

from kflow_jax.kamp import molecular


def _cluster(seed=0, m=17):
  return np.random.default_rng(seed).normal(size=(m, 3)) * 4


def _rot(seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  return q * np.sign(np.linalg.det(q))


def test_projectors_are_an_orthogonal_resolution_of_identity():
  p = molecular.band_projectors(_cluster())
  assert p.shape == (4, 17, 17)
  np.testing.assert_allclose(p.sum(0), np.eye(17), atol=1e-10)
  for k, pk in enumerate(p):
    np.testing.assert_allclose(pk @ pk, pk, atol=1e-10)
    np.testing.assert_allclose(pk, pk.T, atol=1e-12)
    for j in range(k):
      np.testing.assert_allclose(pk @ p[j], 0, atol=1e-10)
  # Band 0 is the constant mode: every molecule moved alike.
  np.testing.assert_allclose(p[0], np.full((17, 17), 1 / 17), atol=1e-10)
  assert [round(np.trace(pk)) for pk in p] == [1, 3, 5, 8]
  field = np.random.default_rng(1).normal(size=(17, 3))
  np.testing.assert_allclose(molecular.band_parts(p, field).sum(0), field,
                             atol=1e-10)


def test_rotation_translation_invariant_and_permutation_equivariant():
  c = _cluster(2)
  p = molecular.band_projectors(c)
  moved = c @ _rot(3).T + np.array([5.0, -2.0, 7.0])
  np.testing.assert_allclose(molecular.band_projectors(moved), p, atol=1e-9)
  perm = np.random.default_rng(4).permutation(17)
  pp = molecular.band_projectors(c[perm])
  np.testing.assert_allclose(pp, p[:, perm][:, :, perm], atol=1e-9)


def test_a_cut_inside_repeated_eigenvalues_moves_to_the_group_end():
  # A regular tetrahedron of 4 molecules: L has eigenvalues 0, x, x, x.
  tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1.0]])
  p = molecular.band_projectors(tet, starts=(0, 1, 2))
  # The cut at 2 would split the triple eigenvalue: bands {0}, {1, 2, 3}.
  assert [round(np.trace(pk)) for pk in p] == [1, 3]
  with pytest.raises(ValueError, match="increase"):
    molecular.band_projectors(tet, starts=(0, 0))
  with pytest.raises(ValueError, match="coincide"):
    molecular.band_projectors(np.zeros((4, 3)))
