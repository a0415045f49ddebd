"""Baselines on a run with one label (no condition slots trained): the
zero-shot ways to give the coarse and the fine bands different labels
(docs/method.md#condition-slots), against which trained condition slots
(flow/slots.py) are measured.

  switched_velocity    the label switched at a band edge (K-Flow) or at the
                       same time (flow matching)
  factorized_velocity  Factorized Diffusion: sum_k P_k v_cfg(x, t, y_k)
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from kflow_jax.flow import guidance as guidance_lib
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import steering

def switched_velocity(apply: Callable, path: paths_lib.Path, y: jax.Array,
                      switch_t: Sequence[float], *, num_classes: int,
                      guidance=1.0) -> Callable:
  """(x, t) -> v of a one-label network whose label is y[:, k] for t in
  [switch_t[k-1], switch_t[k]) (switch_t increasing, K - 1 times): the
  label switched at a band edge (K-Flow) or at the same time (flow
  matching). Guidance as guidance.cfg_velocity. Pass the switch times to
  the sampler as extra_times so that no step straddles one."""
  edges = jnp.asarray(tuple(switch_t), jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  y = jnp.where(y < 0, int(num_classes), y)

  def velocity_fn(x, t):
    k = jnp.sum(t[:, None] >= edges[None], axis=1)
    yt = jnp.take_along_axis(y, k[:, None], axis=1)[:, 0]
    return guidance_lib.cfg_velocity(apply, path, yt, num_classes=num_classes,
                                     guidance=guidance)(x, t)
  return velocity_fn


def factorized_velocity(apply: Callable, path: paths_lib.Path,
                        split: paths_lib.Path, y: jax.Array, *,
                        num_classes: int, guidance=1.0) -> Callable:
  """(x, t) -> sum_k P_k v_cfg(x, t, y[:, k]) (Factorized Diffusion): band
  k of `split` (a path on the same orthonormal transform, e.g. a K-Flow
  run's cut-offs over a one-band flow-matching run) takes the guided
  velocity of label k. K guided evaluations per step."""
  tr = split.transform
  if tr.shape != path.transform.shape or tr.name != path.transform.name:
    raise ValueError(
        f"the factorized split needs bands of the run's own transform "
        f"({path.transform.name} {path.transform.shape}), got {tr.name} "
        f"{tr.shape}.")
  steering.check_mixable(split, list(range(split.num_bands)))
  y = jnp.asarray(y, jnp.int32)
  y = jnp.where(y < 0, int(num_classes), y)
  if y.shape[1] != split.num_bands:
    raise ValueError(f"factorized sampling needs one label per band of the "
                     f"split ({split.num_bands}), got {y.shape[1]}.")
  masks = [jnp.asarray(split.band == k) for k in range(split.num_bands)]

  def velocity_fn(x, t):
    c = None
    for k, m in enumerate(masks):
      v = guidance_lib.cfg_velocity(apply, path, y[:, k],
                                    num_classes=num_classes,
                                    guidance=guidance)(x, t)
      part = jnp.where(m, tr.forward(v), 0)
      c = part if c is None else c + part
    return tr.inverse(c)
  return velocity_fn
