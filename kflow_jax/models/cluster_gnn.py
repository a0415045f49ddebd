"""An E(3)-equivariant network over the rigid molecules of a cluster, in
flax linen (docs/method.md#cluster-network).

Molecule i has a pose (c_i centroid, R_i rotation) and a body (its atoms'
types and coordinates in its own frame, the same for every copy up to
padding). The network predicts the packing's poses (c1_i, R1_i) from the
current ones at band time kappa:

  nodes    h_i = mean of atom-type embeddings + RBF of the atoms' distances
           to the centroid, + the embedding of kappa / K and the band
  edges    on the complete graph: RBF(|c_j - c_i|), R_i^T (c_j - c_i) and
           R_i^T R_j (9 numbers): invariant under a global rotation
           and translation, so every message m_ij is
  update   h_i += MLP(h_i, sum_j m_ij) (EGNN-style, one block per layer)
  output   c1_i = c_i + sum_j (c_i - c_j) phi(m_ij) / (M - 1)
           R1_i = GramSchmidt(v1, v2), v_a = sum_j psi_a(m_ij)(c_j - c_i)
                  + sum_e chi_ae(h_i) R_i e_e

so rotating the input cluster by Q and translating it by s gives
(Q c1 + s, Q R1), and permuting its molecules permutes the outputs
(tests/cluster_gnn_test.py).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def rbf(d, num: int, cutoff: float):
  """[..., num] Gaussian radial basis of distances d [...]."""
  mu = jnp.linspace(0.0, cutoff, num)
  gamma = (num / cutoff) ** 2
  return jnp.exp(-gamma * jnp.square(d[..., None] - mu))


def gram_schmidt(v1, v2):
  """Rotation matrices [..., 3, 3] whose columns come from v1, v2 [..., 3]."""
  u1 = v1 / jnp.maximum(jnp.linalg.norm(v1, axis=-1, keepdims=True), 1e-8)
  w = v2 - jnp.sum(u1 * v2, -1, keepdims=True) * u1
  u2 = w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-8)
  return jnp.stack([u1, u2, jnp.cross(u1, u2)], -1)


class ClusterGNN(nn.Module):
  """(c [B, M, 3], R [B, M, 3, 3], kappa [B], band [B], atom_types
  [B, M, n] (0 = padding), body [B, M, n, 3]) -> (c1, R1)."""
  hidden: int = 128
  depth: int = 4
  num_bands: int = 4
  num_elements: int = 100
  num_rbf: int = 32
  cutoff: float = 30.0

  @nn.compact
  def __call__(self, c, r, kappa, band, atom_types, body):
    b, m = c.shape[:2]
    # Node features: atoms (types, radii in the body frame), band time.
    mask = (atom_types > 0)[..., None].astype(jnp.float32)
    emb = nn.Embed(self.num_elements + 1, self.hidden)(atom_types)
    radius = rbf(jnp.linalg.norm(body, axis=-1), 16, 10.0)
    atoms = nn.Dense(self.hidden)(jnp.concatenate([emb, radius], -1))
    h = jnp.sum(atoms * mask, 2) / jnp.maximum(jnp.sum(mask, 2), 1.0)
    freq = jnp.exp(jnp.linspace(0.0, 6.0, self.hidden // 4))
    k = (kappa / self.num_bands)[:, None] * freq
    t_emb = jnp.concatenate([jnp.sin(k), jnp.cos(k),
                             jax.nn.one_hot(band, self.num_bands)], -1)
    h = h + nn.Dense(self.hidden)(t_emb)[:, None]
    # Edge invariants.
    diff = c[:, None, :, :] - c[:, :, None, :]             # c_j - c_i
    dist = jnp.linalg.norm(diff, axis=-1)
    local = jnp.einsum("bixy,bijx->bijy", r, diff)       # R_i^T (c_j - c_i)
    rel = jnp.einsum("bixy,bjxz->bijyz", r, r).reshape(b, m, m, 9)
    edge = jnp.concatenate([rbf(dist, self.num_rbf, self.cutoff), local /
                            self.cutoff, rel], -1)
    off = (1.0 - jnp.eye(m))[None, :, :, None]
    msg = None
    for _ in range(self.depth):
      pair = jnp.concatenate([jnp.broadcast_to(h[:, :, None], (b, m, m,
                                                               self.hidden)),
                              jnp.broadcast_to(h[:, None], (b, m, m,
                                                            self.hidden)),
                              edge], -1)
      msg = nn.silu(nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(
          pair)))) * off
      agg = jnp.sum(msg, 2) / (m - 1)
      h = h + nn.Dense(self.hidden)(nn.silu(nn.Dense(self.hidden)(
          jnp.concatenate([h, agg], -1))))
    # Equivariant outputs.
    phi = nn.Dense(1, kernel_init=nn.initializers.zeros)(msg)
    c1 = c + jnp.sum(-diff * phi, 2) / (m - 1)
    psi = nn.Dense(2)(msg)                                  # [b, m, m, 2]
    chi = nn.Dense(6)(h).reshape(b, m, 2, 3)                # [b, m, 2, 3]
    # Identity-leaning start: v1 ~ R e_1, v2 ~ R e_2.
    chi = chi + jnp.asarray([[1.0, 0, 0], [0, 1.0, 0]])
    v = (jnp.einsum("bija,bijx->biax", psi, diff) / (m - 1)
         + jnp.einsum("biae,bixe->biax", chi, r))
    return c1, gram_schmidt(v[:, :, 0], v[:, :, 1])


class ClusterNet(nn.Module):
  """ClusterGNN on poses relative to the start, the interface of the flow
  (flow/rigid.py) and of --mode=train/sample/eval on clusters.

  body [B, M, n, 3]: each molecule's atoms at the start minus its centroid
  (world axes); r [B, M, 3, 3]: its rotation since the start (I at the
  start); frame [B, 2]: two atom indices whose directions from the
  centroid span each molecule's frame (data/assembly_sets.frame_atoms).
  The molecule's frame F = GramSchmidt(x_a, x_b) of its current atoms
  x = r body turns with the molecule, so the atoms in their own frame
  F^T x are invariant and ClusterGNN's (c1, F1) come back as the rotation
  since the start R1 = F1 F^T r. Rotating the start cluster by Q maps r to
  Q r Q^T and F to Q F, so the predicted atoms R1 body + c1 rotate with
  it (tests/assembly_test.py)."""
  hidden: int = 128
  depth: int = 4
  num_bands: int = 4
  num_elements: int = 100
  num_rbf: int = 32
  cutoff: float = 30.0

  @nn.compact
  def __call__(self, c, r, kappa, band, atom_types, body, frame):
    x = jnp.einsum("bmij,bmnj->bmni", r, body)
    pick = lambda i: jnp.take_along_axis(
        x, i[:, None, None, None].astype(jnp.int32), axis=2)[:, :, 0]
    f = gram_schmidt(pick(frame[:, 0]), pick(frame[:, 1]))
    own = jnp.einsum("bmji,bmnj->bmni", f, x)
    c1, f1 = ClusterGNN(self.hidden, self.depth, self.num_bands,
                        self.num_elements, self.num_rbf, self.cutoff,
                        name="gnn")(c, f, kappa, band, atom_types, own)
    return c1, f1 @ jnp.swapaxes(f, -1, -2) @ r
