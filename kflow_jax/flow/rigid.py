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
  tr = jnp.trace(r, axis1=-2, axis2=-1)
  cos = jnp.clip((tr - 1) / 2, -1.0, 1.0)
  theta = jnp.arccos(cos)
  v = jnp.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                 r[..., 1, 0] - r[..., 0, 1]], -1)
  sin = jnp.sin(theta)[..., None]
  near_zero = theta[..., None] < 1e-4
  w = jnp.where(near_zero, 0.5 * v,
                theta[..., None] * v / (2 * jnp.where(near_zero, 1.0, sin)))
  # Near pi, sin -> 0: take the axis from the symmetric part instead.
  sym = (r + jnp.swapaxes(r, -1, -2)) / 2 - cos[..., None, None] * jnp.eye(3)
  col = jnp.argmax(jnp.diagonal(sym, axis1=-2, axis2=-1), -1)
  axis = jnp.take_along_axis(sym, col[..., None, None], -1)[..., 0]
  axis = axis / jnp.maximum(jnp.linalg.norm(axis, axis=-1, keepdims=True),
                            1e-12)
  axis = axis * jnp.where(jnp.sum(axis * v, -1, keepdims=True) < 0, -1, 1)
  near_pi = theta[..., None] > jnp.pi - 1e-3
  return jnp.where(near_pi, theta[..., None] * axis, w)


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


def interpolate(projectors, c0, r0, dc, omega, kappa):
  """(c, R) at band time kappa in [0, K] (module doc)."""
  w, _ = _weights(projectors, kappa)
  return c0 + w @ dc, exp_so3(w @ omega) @ r0


def velocity(projectors, dc, omega, kappa):
  """(dc/dkappa, domega/dkappa) = (P_b dc, P_b omega) in band b."""
  _, active = _weights(projectors, kappa)
  return active @ dc, active @ omega


# ----------------------------------------------------------------------------
# Training loss and sampler, with a network that predicts the endpoint.
#
# apply(c [B, M, 3], R [B, M, 3, 3], kappa [B], band [B]) -> (c1_hat, R1_hat)
# (e.g. models/cluster_gnn.ClusterGNN with the atoms bound). Batched
# projectors are [B, K, M, M] (each cluster its own bands).


def _batched(fn):
  return jax.vmap(fn)


def geodesic(r_a, r_b):
  """Rotation angle between r_a and r_b [..., 3, 3] (radians)."""
  return jnp.linalg.norm(log_so3(r_a @ jnp.swapaxes(r_b, -1, -2)), axis=-1)


def endpoint_loss(apply, projectors, c0, r0, c1, r1, kappa,
                  rot_weight: float = 10.0):
  """Mean over clusters and molecules of |c1_hat - c1|^2 + rot_weight x
  angle(R1_hat, R1)^2, the network evaluated on the band path at kappa
  [B] (AssembleFlow's endpoint loss, on the band path)."""
  dc, om = _batched(fields)(c0, r0, c1, r1)
  c, r = _batched(interpolate)(projectors, c0, r0, dc, om, kappa)
  k = projectors.shape[1]
  band = jnp.minimum(jnp.floor(kappa), k - 1).astype(jnp.int32)
  c_hat, r_hat = apply(c, r, kappa, band)
  err_c = jnp.sum(jnp.square(c_hat - c1), -1)
  err_r = jnp.square(geodesic(r_hat, r1))
  return jnp.mean(err_c + rot_weight * err_r)


def sample(apply, projectors, c0, r0, steps_per_band: int):
  """Euler on the band axis from the start poses: in band b at local time
  t, c += dk P_b (c1_hat - c) / (1 - t) and likewise for the rotation
  vectors about R0, so the last step of a band lands band b on the
  prediction. Returns (c [B, M, 3], R [B, M, 3, 3])."""
  k = projectors.shape[1]
  n = int(steps_per_band)
  dk = 1.0 / n
  c = c0
  om = jnp.zeros_like(c0)
  for b in range(k):
    p = projectors[:, b]
    for i in range(n):
      t = i * dk
      kappa = jnp.full((c0.shape[0],), b + t, jnp.float32)
      band = jnp.full((c0.shape[0],), b, jnp.int32)
      r = exp_so3(om) @ r0
      c_hat, r_hat = apply(c, r, kappa, band)
      om_hat = log_so3(r_hat @ jnp.swapaxes(r0, -1, -2))
      scale = dk / (1.0 - t)
      c = c + scale * jnp.einsum("bij,bjd->bid", p, c_hat - c)
      om = om + scale * jnp.einsum("bij,bjd->bid", p, om_hat - om)
  return c, exp_so3(om) @ r0
