"""Velocity backbones v(x_t, t, y) for K-Flow, in flax linen.

`get(name, **kwargs) -> nn.Module`, names in `names()`: "dit", "moe_dit",
"unet", "mlp". Every module is called

  module.apply(variables, x [B, H, W, C], t [B] float32 in [0, 1],
               y [B] int32 or None, train=False) -> float32 [B, H, W, C]

(the MLP also takes x [B, D]). Parameters are float32 and boxed with logical
axis names (see `partitioning.py`; unbox with `nn.meta.unbox`); compute runs
in `dtype=` (e.g. "bfloat16"). Class conditioning: `num_classes=K` gives a
label table of K + 1 rows, row K being the null class used for classifier-
free guidance; `drop_labels` is the training-time label dropout.

Adding a backbone: write a module in this package with the call signature
above, validate its attributes in `__post_init__` (ValueError saying what
works), and call `register(name, cls)` (see MODELS below).
"""
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.infra import registry
from kflow_jax.models import dit
from kflow_jax.models import grid_experts
from kflow_jax.models import mlp
from kflow_jax.models import moe
from kflow_jax.models import unet
from kflow_jax.models.partitioning import LOGICAL_RULES  # noqa: F401
from kflow_jax.models.partitioning import param_shardings  # noqa: F401

MODELS = registry.Registry("model", "config.model")
MODELS.register("dit", dit.DiT)
MODELS.register("moe_dit", moe.MoEDiT, run_options=("tau",))
MODELS.register("unet", unet.UNet)
MODELS.register("mlp", mlp.MLP)


def register(name: str, cls, **hooks):
  """Adds a backbone class under `name` (a flax Module with the contract).

  hooks: run_options=(names...) lists attributes the run fills in from its
  own pieces (e.g. the MoE's band times `tau` from the path), which a
  config must not set.
  """
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ValueError(f"register needs a flax.linen.Module class, got {cls!r}.")
  MODELS.register(name, cls, **hooks)


def names() -> list:
  return MODELS.names()


def fields(name: str) -> list:
  """The keyword arguments `get(name, ...)` accepts."""
  return MODELS.options(name)


def run_options(name: str) -> tuple:
  """Attributes of model `name` that come from the run, not the config."""
  return tuple(MODELS.hook(name, "run_options") or ())


def get(name: str, **kwargs) -> nn.Module:
  """Builds the backbone `name`, e.g. get("dit", size="S", patch_size=2)."""
  return MODELS.build(name, **kwargs)


def drop_labels(rng, y, p, num_classes: int):
  """Label dropout for classifier-free guidance: y -> num_classes w.p. p.

  Returns y unchanged when num_classes == 0 (unconditional) or y is None.
  """
  if num_classes == 0 or y is None:
    return y
  if num_classes < 0:
    raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
  if isinstance(p, (int, float)) and not 0.0 <= p <= 1.0:
    raise ValueError(f"label drop probability p must be in [0, 1], got {p}.")
  drop = jax.random.bernoulli(rng, p, jnp.shape(y))
  return jnp.where(drop, num_classes, y).astype(jnp.int32)


class ParamCount(NamedTuple):
  """total: all parameters; active: those one example uses (for a hard-
  routed MoE only one expert of every block counts)."""
  total: int
  active: int


def _is_expert(path, leaf) -> bool:
  if isinstance(leaf, nn.Partitioned):
    return bool(leaf.names) and leaf.names[0] == "expert"
  keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
  return "moe" in keys and keys[-1] in ("w1", "b1", "w2", "b2")


def count_params(params, module: Optional[nn.Module] = None) -> ParamCount:
  """Counts parameters of (boxed or unboxed, real or abstract) variables.

  Pass the module for a soft-routed MoE DiT (all experts active there)
  and for per-grid experts (an example runs one grid's backbone).
  """
  if isinstance(module, grid_experts.GridExperts):
    total = count_params(params, None).total
    one = count_params(params["experts_0"], module.experts[0])
    return ParamCount(total, one.active)
  total = active = 0
  leaves = jax.tree_util.tree_leaves_with_path(
      params, is_leaf=lambda l: isinstance(l, nn.Partitioned))
  soft = isinstance(module, moe.MoEDiT) and module.routing == "soft"
  for path, leaf in leaves:
    arr = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
    n = int(np.prod(arr.shape))
    total += n
    if _is_expert(path, leaf) and not soft:
      active += n // arr.shape[0]
    else:
      active += n
  return ParamCount(total, active)


def flops(module, variables, x, t, y=None, backward=False) -> float:
  """FLOPs of one call from XLA's compiled cost analysis (whole batch).

  backward=True counts forward + backward of a squared-error loss, i.e. the
  model part of one training step. On CPU the hard-routed MoE's grouped
  matmul lowers densely and is overcounted; DiT.analytic_flops gives the
  matmul FLOPs of the active expert instead.
  """
  fwd = lambda v, x, t, y: module.apply(v, x, t, y)
  fn = (jax.grad(lambda v, x, t, y: jnp.sum(jnp.square(fwd(v, x, t, y))))
        if backward else fwd)
  cost = jax.jit(fn).lower(nn.meta.unbox(variables), x, t, y).compile()
  cost = cost.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return float(cost["flops"])
