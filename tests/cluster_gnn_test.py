"""The cluster network (kflow_jax/models/cluster_gnn.py) is E(3)-
equivariant and permutation-equivariant, and returns rotations."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import rigid
from kflow_jax.models import cluster_gnn

import perturb

B, M, N = 2, 17, 5


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  c = jnp.asarray(rng.normal(size=(B, M, 3)) * 4, jnp.float32)
  r = rigid.exp_so3(jnp.asarray(rng.normal(size=(B, M, 3)), jnp.float32))
  types = jnp.asarray(np.tile([6, 1, 1, 1, 0], (B, M, 1)), jnp.int32)
  body = jnp.asarray(np.broadcast_to(rng.normal(size=(1, 1, N, 3)),
                                     (B, M, N, 3)), jnp.float32)
  kappa = jnp.asarray([0.7, 2.3], jnp.float32)
  band = jnp.asarray([0, 2], jnp.int32)
  return c, r, kappa, band, types, body


@functools.lru_cache(maxsize=None)
def _apply():
  """One compiled network for every test of the file (the compile is the
  cost)."""
  net = cluster_gnn.ClusterGNN(hidden=32, depth=2)
  args = _inputs()
  # Jitted: an eager init dispatches op by op (seconds on 2 cores).
  params = jax.jit(net.init)(jax.random.PRNGKey(0), *args)
  # Non-zero output heads, so the checks see the messages' effect.
  params = perturb.perturbed(params, 1, 0.1)
  return jax.jit(lambda *a: net.apply(params, *a))


def test_outputs_are_rotations_and_move_the_centroids():
  f = _apply()
  c, r, *rest = _inputs()
  c1, r1 = f(c, r, *rest)
  np.testing.assert_allclose(r1 @ jnp.swapaxes(r1, -1, -2),
                             np.broadcast_to(np.eye(3), r1.shape), atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.det(r1), 1.0, atol=1e-5)
  assert float(jnp.max(jnp.abs(c1 - c))) > 1e-3


def test_rotation_translation_and_permutation_equivariance():
  f = _apply()
  c, r, kappa, band, types, body = _inputs()
  c1, r1 = f(c, r, kappa, band, types, body)
  q = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
  q = jnp.asarray(q * np.sign(np.linalg.det(q)), jnp.float32)
  s = jnp.asarray([4.0, -3.0, 1.0])
  c1q, r1q = f(c @ q.T + s, q @ r, kappa, band, types, body)
  np.testing.assert_allclose(c1q, c1 @ q.T + s, atol=2e-4)
  np.testing.assert_allclose(r1q, q @ r1, atol=2e-4)
  perm = np.random.default_rng(6).permutation(M)
  c1p, r1p = f(c[:, perm], r[:, perm], kappa, band, types[:, perm],
               body[:, perm])
  np.testing.assert_allclose(c1p, c1[:, perm], atol=2e-4)
  np.testing.assert_allclose(r1p, r1[:, perm], atol=2e-4)
