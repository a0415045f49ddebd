"""Band-routed mixture-of-experts DiT: one MLP expert per K-Flow band.

K-Flow runs one network over every band (docs/method.md#moe-dit); the paper's
backbone is "a MoE version of DiT-L/2". Here attention is shared and the MLP
of every block is a stack of experts. The router is not learned from tokens:
it reads the active band at time t, kamp.band_of_time(t, tau), where `tau`
(len S+1, the band time edges of the path) is a static attribute, so each
scale gets its own MLP capacity at no extra FLOPs.

Routing:
  "hard": example -> expert band * E // S. Examples are sorted by expert and
    the tokens go through one grouped matmul (`jax.lax.ragged_dot`), so each
    example computes only its own expert (a grouped GEMM on GPU/TPU; the CPU
    lowering is dense and masks, which is why the XLA cost analysis of this
    model overcounts on CPU: use `analytic_flops` there).
  "soft": a learned table of logits [S, E] gives a softmax mix of all experts
    per band, initialized to favour the hard assignment. Every expert is
    computed (E x the MLP FLOPs); use it to let bands share capacity.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp
from kflow_jax.models import dit
from kflow_jax.models import layers

ROUTINGS = ("hard", "soft")
# Logit given to the hard-assigned expert when a soft router is initialized:
# softmax puts e^4 / (e^4 + E - 1) of the weight on it (0.96 for E = 3).
_SOFT_INIT_LOGIT = 4.0


def validate_tau(tau) -> tuple:
  """Band time edges 0 = tau_0 < ... < tau_S = 1 as a tuple of floats."""
  if tau is None:
    raise ValueError(
        "moe_dit needs tau, the band time edges of the run's path (len S+1, "
        "from 0 to 1). `experiment.setup` passes the path's own tau; when "
        "building the model by hand use models.get('moe_dit', tau=path.tau).")
  return kamp.validate_edges(tau, "tau")


class ExpertMlp(nn.Module):
  """E stacked MLP experts [E, D, M] / [E, M, D] routed by band."""
  hidden: int
  mlp: int
  num_experts: int
  num_bands: int
  routing: str = "hard"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _params(self):
    e, d, m = self.num_experts, self.hidden, self.mlp
    xavier = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1,
                                            batch_axis=(0,))
    zeros = nn.initializers.zeros_init()
    p = lambda n, init, shape, names: self.param(
        n, nn.with_logical_partitioning(init, names), shape, self.param_dtype)
    return (p("w1", xavier, (e, d, m), ("expert", "embed", "mlp")),
            p("b1", zeros, (e, m), ("expert", "mlp")),
            p("w2", xavier, (e, m, d), ("expert", "mlp", "embed")),
            p("b2", zeros, (e, d), ("expert", "embed")))

  @nn.compact
  def __call__(self, x, band):
    w1, b1, w2, b2 = (a.astype(self.dtype) for a in self._params())
    expert = band * self.num_experts // self.num_bands
    if self.routing == "hard":
      return self._hard(x, expert, w1, b1, w2, b2)
    return self._soft(x, band, expert, w1, b1, w2, b2)

  def _hard(self, x, expert, w1, b1, w2, b2):
    bsz, length, d = x.shape
    # Sort examples by expert so each expert's tokens are one contiguous
    # group for the grouped matmul; a stable sort keeps the inverse simple.
    order = jnp.argsort(expert, stable=True)
    inverse = jnp.argsort(order)
    es = expert[order]
    sizes = (jnp.bincount(expert, length=self.num_experts) *
             length).astype(jnp.int32)
    xs = x[order].reshape(bsz * length, d)
    h = jax.lax.ragged_dot(xs, w1, sizes).reshape(bsz, length, self.mlp)
    h = nn.gelu(h + b1[es][:, None], approximate=True)
    h = layers.constrain(h, ("batch", "length", "mlp"))
    out = jax.lax.ragged_dot(h.reshape(bsz * length, self.mlp), w2, sizes)
    out = out.reshape(bsz, length, d) + b2[es][:, None]
    return out[inverse]

  def _soft(self, x, band, expert, w1, b1, w2, b2):
    def init(_, shape, dtype):
      hard = (np.arange(shape[0])[:, None] * shape[1] // shape[0] ==
              np.arange(shape[1])[None])
      return jnp.asarray(_SOFT_INIT_LOGIT * hard, dtype)
    del expert
    logits = self.param(
        "router", nn.with_logical_partitioning(init, ("band", "expert")),
        (self.num_bands, self.num_experts), jnp.float32)
    gate = jax.nn.softmax(logits[band], axis=-1).astype(self.dtype)  # [B, E]
    h = jnp.einsum("bld,edm->blem", x, w1) + b1[None, None]
    h = nn.gelu(h, approximate=True)
    out = jnp.einsum("blem,emd,be->bld", h, w2, gate)
    return out + jnp.einsum("ed,be->bd", b2, gate)[:, None]


class MoEDiTBlock(dit.DiTBlock):
  """DiT block whose MLP is a band-routed stack of experts."""
  num_experts: int = 2
  num_bands: int = 2
  routing: str = "hard"

  def mlp(self, h, route):
    return ExpertMlp(self.hidden, int(self.hidden * self.mlp_ratio),
                     self.num_experts, self.num_bands, self.routing,
                     dtype=self.dtype, param_dtype=self.param_dtype,
                     name="moe")(h, route)


class MoEDiT(dit.DiT):
  """DiT with band-routed MLP experts; see `models.get("moe_dit", ...)`.

  Extra attributes:
    tau: band time edges (0, tau_1, ..., 1), len S + 1 (e.g. `path.tau`).
    num_experts: experts per block, 1 <= E <= S (default S: one per band);
      band s uses expert s * E // S.
    routing: "hard" (one expert per example) or "soft" (learned mix).
  """
  tau: Optional[tuple] = None
  num_experts: Optional[int] = None
  routing: str = "hard"

  def __post_init__(self):
    object.__setattr__(self, "tau", validate_tau(self.tau))
    s = len(self.tau) - 1
    if self.num_experts is not None and not 1 <= int(self.num_experts) <= s:
      raise ValueError(
          f"num_experts must be between 1 and the number of bands S={s}, got "
          f"{self.num_experts}; leave it None for one expert per band.")
    if self.routing not in ROUTINGS:
      raise ValueError(
          f"routing must be one of {ROUTINGS}, got {self.routing!r}.")
    super().__post_init__()

  @property
  def experts(self) -> int:
    return int(self.num_experts or len(self.tau) - 1)

  def route(self, t):
    return kamp.band_of_time(t, self.tau)

  def block(self, i):
    hidden, _, heads = self.dims
    cls = nn.remat(MoEDiTBlock) if self.remat else MoEDiTBlock
    return cls(hidden, heads, self.mlp_ratio, dtype=self._dtype,
               param_dtype=self.param_dtype,
               attention_impl=self.attention_impl,
               num_experts=self.experts, num_bands=len(self.tau) - 1,
               routing=self.routing, name=f"blocks_{i}")

  def _active_mlp_macs(self, n, hidden, mlp):
    per_expert = 2 * n * hidden * mlp
    return per_expert * (self.experts if self.routing == "soft" else 1)
