"""Band paths of rigid molecules (kflow_jax/flow/rigid.py): exact ends,
one band = rigid flow matching, band-local velocity, equivariance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax.flow import rigid
from kflow_jax.kamp import molecular

M = 17


def _poses(seed):
  rng = np.random.default_rng(seed)
  c = rng.normal(size=(M, 3)) * 4
  w = rng.normal(size=(M, 3))
  w = w / np.linalg.norm(w, axis=1, keepdims=True) * rng.uniform(
      0.1, 3.0, size=(M, 1))
  return jnp.asarray(c, jnp.float32), rigid.exp_so3(jnp.asarray(w,
                                                             jnp.float32))


def test_exp_and_log_invert_each_other_up_to_pi():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(200, 3))
  w = w / np.linalg.norm(w, axis=1, keepdims=True) * np.concatenate(
      [rng.uniform(0, 3.1, 190), np.full(5, 1e-6), np.full(5, np.pi - 1e-4)]
  )[:, None]
  r = rigid.exp_so3(jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(r @ jnp.swapaxes(r, -1, -2),
                             np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
  back = rigid.log_so3(r)
  # To float32 rounding at every angle, 1e-4 from pi included (arccos of
  # the trace, and the axis from R - R^T, lost up to 1e-3 there).
  np.testing.assert_allclose(rigid.exp_so3(back), r, atol=2e-6)


def test_ends_are_exact_and_one_band_is_rigid_flow_matching():
  c0, r0 = _poses(1)
  c1, r1 = _poses(2)
  p = jnp.asarray(molecular.band_projectors(np.asarray(c0)), jnp.float32)
  dc, om = rigid.fields(c0, r0, c1, r1)
  c, r = rigid.interpolate(p, c0, r0, dc, om, 0.0)
  np.testing.assert_allclose(c, c0, atol=1e-6)
  np.testing.assert_allclose(r, r0, atol=1e-6)
  c, r = rigid.interpolate(p, c0, r0, dc, om, float(p.shape[0]))
  np.testing.assert_allclose(c, c1, atol=1e-4)
  # Relative rotations up to 0.05 from pi among these poses.
  np.testing.assert_allclose(r, r1, atol=5e-6)
  # One band: straight centroids, SO(3) geodesic (constant angular speed
  # about a fixed axis: R(t) R0^T = Exp(t omega)).
  one = jnp.eye(M)[None]
  for t in (0.25, 0.5, 0.9):
    c, r = rigid.interpolate(one, c0, r0, dc, om, t)
    np.testing.assert_allclose(c, c0 + t * (c1 - c0), atol=1e-5)
    rel = rigid.log_so3(r @ jnp.swapaxes(r0, -1, -2))
    np.testing.assert_allclose(rel, t * om, atol=2e-4)
  # The geodesic is the shortest rotation: no angle above pi.
  assert float(jnp.max(jnp.linalg.norm(om, axis=-1))) <= np.pi + 1e-5


def test_velocity_of_band_b_lies_in_band_b():
  c0, r0 = _poses(3)
  c1, r1 = _poses(4)
  p = jnp.asarray(molecular.band_projectors(np.asarray(c0)), jnp.float32)
  dc, om = rigid.fields(c0, r0, c1, r1)
  for kappa in (0.3, 1.5, 2.2, 3.7):
    b = int(kappa)
    v_c, v_w = rigid.velocity(p, dc, om, kappa)
    for k in range(p.shape[0]):
      want = v_c if k == b else 0 * v_c
      np.testing.assert_allclose(p[k] @ v_c, want, atol=1e-4)
      np.testing.assert_allclose(p[k] @ v_w, v_w if k == b else 0 * v_w,
                                 atol=1e-4)
    # Finite difference of the path inside band b.
    h = 1e-2
    ca, _ = rigid.interpolate(p, c0, r0, dc, om, kappa - h)
    cb, _ = rigid.interpolate(p, c0, r0, dc, om, kappa + h)
    np.testing.assert_allclose((cb - ca) / (2 * h), v_c, atol=2e-3)


def test_rotating_and_translating_the_cluster_moves_the_path_alike():
  c0, r0 = _poses(5)
  c1, r1 = _poses(6)
  q = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))[0]
  q = jnp.asarray(q * np.sign(np.linalg.det(q)), jnp.float32)
  shift = jnp.asarray([3.0, -1.0, 2.0])
  move_c = lambda c: c @ q.T + shift
  move_r = lambda r: q @ r
  p = jnp.asarray(molecular.band_projectors(np.asarray(c0)), jnp.float32)
  pm = jnp.asarray(molecular.band_projectors(np.asarray(move_c(c0))),
                   jnp.float32)
  np.testing.assert_allclose(pm, p, atol=1e-5)
  dc, om = rigid.fields(c0, r0, c1, r1)
  dcm, omm = rigid.fields(move_c(c0), move_r(r0), move_c(c1), move_r(r1))
  for kappa in (0.5, 1.7, 3.2):
    c, r = rigid.interpolate(p, c0, r0, dc, om, kappa)
    cm, rm = rigid.interpolate(pm, move_c(c0), move_r(r0), dcm, omm, kappa)
    np.testing.assert_allclose(cm, move_c(c), atol=2e-4)
    np.testing.assert_allclose(rm, move_r(r), atol=2e-4)


def _batch(seeds):
  c0, r0 = zip(*[_poses(s) for s in seeds])
  c1, r1 = zip(*[_poses(s + 100) for s in seeds])
  c0, r0, c1, r1 = (jnp.stack(a) for a in (c0, r0, c1, r1))
  p = jnp.stack([jnp.asarray(molecular.band_projectors(np.asarray(c)),
                             jnp.float32) for c in c0])
  return p, c0, r0, c1, r1


def test_sampler_with_the_true_endpoint_lands_on_it_and_loss_is_zero():
  p, c0, r0, c1, r1 = _batch([10, 11])
  oracle = lambda c, r, kappa, band: (c1, r1)
  # Jitted as training and sampling run them: one compile each, not one
  # per eager op.
  c, r = jax.jit(lambda: rigid.sample(oracle, p, c0, r0, steps_per_band=3))()
  np.testing.assert_allclose(c, c1, atol=1e-4)
  np.testing.assert_allclose(r, r1, atol=5e-4)
  kappa = jnp.asarray([0.4, 2.6])
  loss = jax.jit(lambda f: rigid.endpoint_loss(f, p, c0, r0, c1, r1, kappa),
                 static_argnums=0)
  assert float(loss(oracle)) < 1e-6
  wrong = lambda c, r, kappa, band: (c1 + 1.0, r1)
  assert float(loss(wrong)) == pytest.approx(3.0, rel=1e-4)
  # After band 0 only band 0 of the centroid field has moved.
  one_band = lambda c, r, kappa, band: (c1, r1)
  c, _ = jax.jit(lambda: rigid.sample(one_band, p[:, :1], c0, r0,
                                      steps_per_band=2))()
  dc = c - c0
  np.testing.assert_allclose(dc, jnp.einsum("bij,bjd->bid", p[:, 0], c1 - c0),
                             atol=1e-4)


# Midpoint fast; Euler in -m slow (its one-band sampler is checked fast
# by test_ends_are_exact_and_one_band_is_rigid_flow_matching).
@pytest.mark.parametrize("solver", [
    pytest.param(s, marks=() if s == "midpoint" else pytest.mark.slow)
    for s in rigid.SOLVERS])
def test_uniform_rotations_move_at_one_pace_and_land_on_the_target(solver):
  """rotations="uniform": the centroids still move band by band, every
  rotation vector at kappa / K of its way; the sampler with the true
  endpoint lands on it; with one band both modes are one path."""
  p, c0, r0, c1, r1 = _batch([20, 21])
  dc, om = jax.jit(jax.vmap(rigid.fields))(c0, r0, c1, r1)
  k = p.shape[1]
  uniform = jax.jit(jax.vmap(
      lambda *a: rigid.interpolate(*a, rotations="uniform")))
  bands = jax.jit(jax.vmap(rigid.interpolate))
  for kappa in (0.5, 1.7, 3.2):
    c, r = uniform(p, c0, r0, dc, om, jnp.full((2,), kappa))
    cb, _ = bands(p, c0, r0, dc, om, jnp.full((2,), kappa))
    np.testing.assert_allclose(c, cb, atol=1e-6)
    rel = rigid.log_so3(r @ jnp.swapaxes(r0, -1, -2))
    np.testing.assert_allclose(rel, kappa / k * om, atol=5e-4)
  oracle = lambda c, r, kappa, band: (c1, r1)
  sample = jax.jit(lambda proj, n, mode: rigid.sample(
      oracle, proj, c0, r0, n, solver, rotations=mode), static_argnums=(1, 2))
  c, r = sample(p, 3, "uniform")
  np.testing.assert_allclose(c, c1, atol=1e-4)
  np.testing.assert_allclose(r, r1, atol=5e-4)
  one = p[:, :1] * 0 + jnp.eye(M)
  a = sample(one, 2, "bands")
  b = sample(one, 2, "uniform")
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=1e-5)
  with pytest.raises(ValueError, match="rotations"):
    rigid.sample(oracle, p, c0, r0, 2, solver, rotations="spin")


def test_projected_centroid_loss_reads_only_the_active_band():
  """project_centroids: a prediction right in the active band and wrong in
  every other band costs nothing; wrong in the active band it costs."""
  p, c0, r0, c1, r1 = _batch([30, 31])
  kappa = jnp.asarray([1.5, 2.25])
  band = jnp.floor(kappa).astype(jnp.int32)
  active = jnp.stack([p[i, band[i]] for i in range(2)])
  noise = jax.random.normal(jax.random.PRNGKey(0), c1.shape)
  off_band = noise - jnp.einsum("bij,bjd->bid", active, noise)
  wrong_elsewhere = lambda c, r, k, b: (c1 + off_band, r1)
  loss = lambda f, proj: float(jax.jit(lambda: rigid.endpoint_loss(
      f, p, c0, r0, c1, r1, kappa, project_centroids=proj))())
  assert loss(wrong_elsewhere, True) < 1e-8
  assert loss(wrong_elsewhere, False) > 0.1
  in_band = jnp.einsum("bij,bjd->bid", active, noise)
  wrong_here = lambda c, r, k, b: (c1 + in_band, r1)
  assert loss(wrong_here, True) == pytest.approx(loss(wrong_here, False),
                                                 rel=1e-5)
