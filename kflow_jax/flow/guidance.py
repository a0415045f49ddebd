"""Classifier-free guidance: v = v_u + w(t) (v_c - v_u), with w a constant,
a per-band schedule or a function of t (docs/method.md#guidance)."""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import paths as paths_lib


def guidance_weights(path: paths_lib.Path, guidance, t) -> jax.Array:
  """w(t) float32 [B] from a constant, a per-band schedule [S] or a callable."""
  if callable(guidance):
    return jnp.broadcast_to(jnp.asarray(guidance(t), jnp.float32), t.shape)
  g = np.asarray(guidance, np.float32)
  if g.ndim == 0:
    return jnp.full(t.shape, g, jnp.float32)
  if g.ndim != 1 or g.size != path.num_bands:
    raise ValueError(
        f"a per-band guidance schedule needs {path.num_bands} values (one per "
        f"configured band), got shape {g.shape}.")
  return jnp.asarray(g)[paths_lib.active_band(path, t)]


def cfg_velocity(apply_fn: Callable, path: paths_lib.Path, y: jax.Array, *,
                 num_classes: int, guidance=1.0) -> Callable:
  """velocity_fn(x, t) = v_u + w(t) (v_c - v_u) from a model apply_fn.

  apply_fn(x, t, y) -> v (e.g. lambda x, t, y: model.apply(params, x, t, y)).
  The null label is num_classes. A constant guidance of 1 calls the model
  once with y; otherwise one batched call of 2B (conditional, then null).
  guidance: float, per-band sequence [S], or callable t [B] -> w [B].
  """
  if int(num_classes) < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  if not callable(guidance):
    guidance_weights(path, guidance, jnp.zeros((1,), jnp.float32))  # validate
  null = jnp.full_like(y, int(num_classes))
  if not callable(guidance) and np.ndim(guidance) == 0 and float(
      guidance) == 1.0:
    return lambda x, t: apply_fn(x, t, y)

  def velocity_fn(x, t):
    v = apply_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                 jnp.concatenate([y, null]))
    v_c, v_u = jnp.split(v, 2)
    w = guidance_weights(path, guidance, t).reshape((-1,) + (1,) * (x.ndim - 1))
    return v_u + w * (v_c - v_u)
  return velocity_fn
