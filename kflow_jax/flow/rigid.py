"""Band paths of rigid molecules (docs/method.md#rigid-band-paths).

A cluster of M rigid molecules has poses (c_i, R_i): centroid and rotation.
From the start (c0, R0) to the packing (c1, R1), the per-molecule fields

  dc_i = c1_i - c0_i            omega_i = Log(R1_i R0_i^T)   (|omega| <= pi)

are split by the graph-Fourier band projectors P_b of the source centroids
(kamp/molecular.py). On the band axis kappa in [0, K] (band b = floor(kappa)
moves while the bands before it are done; t = kappa - b):

  c(kappa)       = c0 + (S_b + t P_b) dc
  omega(kappa)   = (S_b + t P_b) omega,   R_i(kappa) = Exp(omega_i(kappa)) R0_i

with S_b = sum_{b' < b} P_b'. At kappa = K every band is done: c = c1 and
R = R1 exactly (up to float round-off). With one band (P_0 = I) this is
plain rigid flow matching: a straight line for centroids and the SO(3)
geodesic (the shortest rotation) for each molecule. The velocity in band b
is P_b dc and P_b omega: zero in every other band.
"""
import jax
import jax.numpy as jnp


def hat(w):
  """[..., 3] -> [..., 3, 3] skew-symmetric matrices."""
  x, y, z = w[..., 0], w[..., 1], w[..., 2]
  o = jnp.zeros_like(x)
  return jnp.stack([jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1),
                    jnp.stack([-y, x, o], -1)], -2)


def exp_so3(w):
  """Rotation matrices [..., 3, 3] of rotation vectors w [..., 3]
  (Rodrigues; the series near 0)."""
  theta2 = jnp.sum(w * w, -1)[..., None, None]
  theta = jnp.sqrt(jnp.maximum(theta2, 1e-30))
  small = theta2 < 1e-8
  a = jnp.where(small, 1 - theta2 / 6, jnp.sin(theta) / theta)
  b = jnp.where(small, 0.5 - theta2 / 24, (1 - jnp.cos(theta)) / theta2)
  k = hat(w)
  return jnp.eye(3) + a * k + b * (k @ k)


def log_so3(r):
  """Rotation vectors [..., 3] (angle in [0, pi]) of rotations [..., 3, 3]."""
  cos = (jnp.trace(r, axis1=-2, axis2=-1) - 1) / 2
  v = jnp.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                 r[..., 1, 0] - r[..., 0, 1]], -1)   # 2 sin(theta) axis
  two_sin = jnp.sqrt(jnp.maximum(jnp.sum(v * v, -1), 1e-30))
  # atan2 holds the angle to float precision everywhere; arccos(cos) loses
  # digits as 1 / sin near 0 and pi.
  theta = jnp.arctan2(two_sin / 2, cos)[..., None]
  near_zero = theta < 1e-4
  w = jnp.where(near_zero, 0.5 * v,
                theta * v / jnp.where(near_zero, 1.0, two_sin[..., None]))
  # Past pi / 2, v shrinks with sin(theta) while its rounding error does
  # not, so its direction loses digits (rotations 0.05 from pi came back
  # 1e-4 off in float32). The symmetric part, (1 - cos) a a^T with
  # 1 - cos >= 1 there, holds the axis; v gives its sign.
  sym = (r + jnp.swapaxes(r, -1, -2)) / 2 - cos[..., None, None] * jnp.eye(3)
  col = jnp.argmax(jnp.diagonal(sym, axis1=-2, axis2=-1), -1)
  axis = jnp.take_along_axis(sym, col[..., None, None], -1)[..., 0]
  axis = axis / jnp.maximum(jnp.linalg.norm(axis, axis=-1, keepdims=True),
                            1e-12)
  axis = axis * jnp.where(jnp.sum(axis * v, -1, keepdims=True) < 0, -1, 1)
  return jnp.where(theta > jnp.pi / 2, theta * axis, w)


def fields(c0, r0, c1, r1):
  """(dc [M, 3], omega [M, 3]): what each molecule moves, in translation
  and rotation, from the start to the packing."""
  return c1 - c0, log_so3(r1 @ jnp.swapaxes(r0, -1, -2))


def _weights(projectors, kappa):
  """S_b + t P_b and P_b for kappa (scalar) over K bands."""
  k = projectors.shape[0]
  kappa = jnp.clip(kappa, 0.0, float(k))
  b = jnp.minimum(jnp.floor(kappa), k - 1).astype(jnp.int32)
  t = kappa - b
  idx = jnp.arange(k)
  done = jnp.sum(jnp.where((idx < b)[:, None, None], projectors, 0), 0)
  active = projectors[b]
  return done + t * active, active


# How the rotations move along the band axis: "bands", band by band like
# the centroids (module doc); "uniform", every molecule's rotation vector
# at the same pace over the whole axis, omega(kappa) = (kappa / K) omega,
# while the centroids still move band by band (for rotations the graph of
# the centroids may carry no structure: a start with independent random
# orientations has a white rotation field over the molecules).
ROTATIONS = ("bands", "uniform")


def _rot_weights(projectors, kappa, rotations):
  if rotations not in ROTATIONS:
    raise ValueError(f"rotations={rotations!r} is not one of {ROTATIONS}.")
  if rotations == "bands":
    return _weights(projectors, kappa)
  k, m = projectors.shape[0], projectors.shape[-1]
  eye = jnp.eye(m, dtype=projectors.dtype)
  return jnp.clip(kappa, 0.0, float(k)) / k * eye, eye / k


def interpolate(projectors, c0, r0, dc, omega, kappa, rotations="bands"):
  """(c, R) at band time kappa in [0, K] (module doc)."""
  w, _ = _weights(projectors, kappa)
  wr, _ = _rot_weights(projectors, kappa, rotations)
  return c0 + w @ dc, exp_so3(wr @ omega) @ r0


def velocity(projectors, dc, omega, kappa, rotations="bands"):
  """(dc/dkappa, domega/dkappa): (P_b dc, P_b omega) in band b; the
  rotation part omega / K with rotations="uniform"."""
  _, active = _weights(projectors, kappa)
  _, rot = _rot_weights(projectors, kappa, rotations)
  return active @ dc, rot @ omega


# ----------------------------------------------------------------------------
# Training loss and sampler, with a network that predicts the endpoint.
#
# apply(c [B, M, 3], R [B, M, 3, 3], kappa [B], band [B]) -> (c1_hat, R1_hat)
# (e.g. models/cluster_gnn.ClusterGNN with the atoms bound). Batched
# projectors are [B, K, M, M] (each cluster its own bands).


def _batched(fn):
  return jax.vmap(fn)


def endpoint_errors(apply, projectors, c0, r0, c1, r1, kappa,
                    rot_weight: float = 10.0, rotations: str = "bands",
                    project_centroids: bool = False):
  """[B]: |c1_hat - c1|^2 + rot_weight x |R1_hat - R1|_F^2 / 2, each
  cluster's mean over its molecules, the network evaluated on the band
  path at kappa [B] (AssembleFlow's endpoint loss, on the band path).

  |R1_hat - R1|_F^2 / 2 = 2 (1 - cos angle), the squared angle for small
  angles (so rot_weight weighs rad^2 against A^2) and smooth everywhere:
  the angle itself (arccos of the trace) has an infinite derivative at 0,
  which turned gradients into NaN once predictions got close.

  project_centroids: the centroid error only in the active band,
  |P_b (c1_hat - c1)|^2, the part of the prediction the sampler uses in
  band b (the analogue of band I/O's output projection); the network is
  then not asked for the bands still ahead."""
  dc, om = _batched(fields)(c0, r0, c1, r1)
  c, r = jax.vmap(lambda *a: interpolate(*a, rotations=rotations))(
      projectors, c0, r0, dc, om, kappa)
  k = projectors.shape[1]
  band = jnp.minimum(jnp.floor(kappa), k - 1).astype(jnp.int32)
  c_hat, r_hat = apply(c, r, kappa, band)
  diff = c_hat - c1
  if project_centroids:
    active = jnp.take_along_axis(projectors, band[:, None, None, None],
                                 axis=1)[:, 0]
    diff = jnp.einsum("bij,bjd->bid", active, diff)
  err_c = jnp.sum(jnp.square(diff), -1)
  err_r = 0.5 * jnp.sum(jnp.square(r_hat - r1), (-2, -1))
  return jnp.mean(err_c + rot_weight * err_r, -1)


def endpoint_loss(apply, projectors, c0, r0, c1, r1, kappa,
                  rot_weight: float = 10.0, rotations: str = "bands",
                  project_centroids: bool = False):
  """The mean of `endpoint_errors` over the clusters."""
  return jnp.mean(endpoint_errors(apply, projectors, c0, r0, c1, r1, kappa,
                                  rot_weight, rotations, project_centroids))


SOLVERS = ("euler", "midpoint")


def sample(apply, projectors, c0, r0, steps_per_band: int,
           solver: str = "euler", rotations: str = "bands"):
  """Band by band from the start poses, `steps_per_band` steps in each.

  The field of band b at local time t moves towards the network's
  endpoint: dc/dk = P_b (c1_hat - c) / (1 - t), and likewise for the
  rotation vectors about R0. "euler" takes that step (its last step of a
  band lands band b on the prediction); "midpoint" evaluates the field
  at the middle of the step (the second evaluation never reaches t = 1,
  where the field is singular). One lax.scan over the band grid, so the
  network is traced once. With rotations="uniform" the rotation vectors
  follow domega/dk = (omega_hat - omega) / (K - kappa) over the whole axis
  instead. Returns (c [B, M, 3], R [B, M, 3, 3]).
  """
  if rotations not in ROTATIONS:
    raise ValueError(f"rotations={rotations!r} is not one of {ROTATIONS}.")
  if solver not in SOLVERS:
    raise ValueError(f"unknown rigid solver {solver!r}; choose one of "
                     f"{SOLVERS}.")
  k = projectors.shape[1]
  n = int(steps_per_band)
  if n < 1:
    raise ValueError(f"steps_per_band must be >= 1, got {n}.")
  dk = 1.0 / n
  bsz = c0.shape[0]
  r0t = jnp.swapaxes(r0, -1, -2)

  def field(c, om, p, b, t):
    kappa = jnp.full((bsz,), b + t, jnp.float32)
    band = jnp.full((bsz,), b, jnp.int32)
    c_hat, r_hat = apply(c, exp_so3(om) @ r0, kappa, band)
    om_hat = log_so3(r_hat @ r0t)
    inv = 1.0 / (1.0 - t)
    vc = inv * jnp.einsum("bij,bjd->bid", p, c_hat - c)
    if rotations == "uniform":
      return vc, (om_hat - om) / (k - (b + t))
    return vc, inv * jnp.einsum("bij,bjd->bid", p, om_hat - om)

  def step(carry, grid):
    c, om = carry
    b, i = grid[0], grid[1]
    t = i.astype(jnp.float32) * dk
    p = jnp.take(projectors, b, axis=1)
    vc, vo = field(c, om, p, b, t)
    if solver == "midpoint":
      vc, vo = field(c + 0.5 * dk * vc, om + 0.5 * dk * vo, p, b,
                     t + 0.5 * dk)
    return (c + dk * vc, om + dk * vo), None

  grid = jnp.stack(jnp.meshgrid(jnp.arange(k), jnp.arange(n),
                                indexing="ij"), -1).reshape(-1, 2)
  (c, om), _ = jax.lax.scan(step, (c0, jnp.zeros_like(c0)), grid)
  return c, exp_so3(om) @ r0
