"""Per-grid experts: one backbone per coarse grid of a scale-adaptive run.

A scale-adaptive run (kflow_jax/flow/adaptive.py) runs band s's network on
bands 0..s as an image of H / f x W / f. With one set of weights, the same
network must model the coarsest grid's global layout and the finest grid's
texture. `GridExperts` gives every grid factor f its own copy of the
backbone: a band's step costs what it cost before (the same network on the
same grid), and the parameters grow by the number of grids. Which expert
runs is static (the call's `frame`), so nothing is routed at run time and
each expert's gradient comes only from its own bands' examples.

Built by the run (run/experiment.build_model, config.model.per_grid_experts),
never by name: the factors come from the run's plan.
"""
from typing import Optional, Sequence

import flax.linen as nn

from kflow_jax.models import layers


class GridExperts(nn.Module):
  """experts[i] (unbound backbone modules of one kind and size) serves the
  inputs whose frame has factor factors[i] (frame None: factor 1).

  At init every expert is initialised on the init input (each expert's
  parameters exist whatever grid the init call sees); the output is the
  expert of that input's frame, as at apply."""
  experts: Sequence[nn.Module]
  factors: Sequence[int]

  def __post_init__(self):
    factors = tuple(int(f) for f in self.factors)
    if len(factors) != len(self.experts) or not factors:
      raise ValueError(
          f"GridExperts needs one expert per grid factor, got "
          f"{len(self.experts)} experts for factors {factors}.")
    if len(set(factors)) != len(factors):
      raise ValueError(f"GridExperts: factors {factors} repeat; each grid "
                       "gets one expert.")
    kinds = {type(e).__name__ for e in self.experts}
    if len(kinds) != 1:
      raise ValueError(f"GridExperts: experts of one backbone kind, got "
                       f"{sorted(kinds)}.")
    super().__post_init__()

  @property
  def grid_multiple(self):
    return getattr(self.experts[0], "grid_multiple", None)

  def expert_index(self, frame) -> int:
    frame = layers.check_frame(frame, "GridExperts")
    f = 1 if frame is None else int(frame.factor)
    factors = tuple(int(v) for v in self.factors)
    if f not in factors:
      raise ValueError(
          f"GridExperts has experts for grid factors {factors}, not for an "
          f"input of factor {f}; build it from the run's plan "
          "(config.model.per_grid_experts).")
    return factors.index(f)

  def __call__(self, x, t, y=None, train: bool = False,
               frame: Optional[layers.Frame] = None):
    i = self.expert_index(frame)
    if self.is_initializing():
      outs = [e(x, t, y, train=train, frame=frame) for e in self.experts]
      return outs[i]
    return self.experts[i](x, t, y, train=train, frame=frame)
