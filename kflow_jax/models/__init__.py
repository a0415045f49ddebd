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
works), and add it to `_REGISTRY` (or call `register(name, cls)`).
"""
import dataclasses
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.models import dit
from kflow_jax.models import mlp
from kflow_jax.models import moe
from kflow_jax.models import unet
from kflow_jax.models.partitioning import LOGICAL_RULES  # noqa: F401
from kflow_jax.models.partitioning import param_shardings  # noqa: F401

_REGISTRY = {
    "dit": dit.DiT,
    "moe_dit": moe.MoEDiT,
    "unet": unet.UNet,
    "mlp": mlp.MLP,
}


def register(name: str, cls):
  """Adds a backbone class under `name` (a flax Module with the contract)."""
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ValueError(f"register needs a flax.linen.Module class, got {cls!r}.")
  _REGISTRY[name] = cls


def names() -> list:
  return sorted(_REGISTRY)


def fields(name: str) -> list:
  """The keyword arguments `get(name, ...)` accepts."""
  cls = _REGISTRY[name]
  return [f.name for f in dataclasses.fields(cls)
          if f.name not in ("parent", "name")]


def get(name: str, **kwargs) -> nn.Module:
  """Builds the backbone `name`, e.g. get("dit", size="S", patch_size=2)."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; valid names: {names()}.")
  bad = sorted(set(kwargs) - set(fields(name)))
  if bad:
    raise ValueError(
        f"Model {name!r} has no option(s) {bad}; valid options: "
        f"{fields(name)}.")
  return _REGISTRY[name](**kwargs)


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

  Pass the module for a soft-routed MoE DiT (all experts active there).
  """
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
