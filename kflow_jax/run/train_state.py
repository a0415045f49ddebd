"""TrainState: everything a step reads and writes, as one pytree.

The state is the unit of checkpointing and of exact resumption: step,
params, EMA params (one tree per decay), optimizer state and the base rng.
The per-step rng is derived as `fold_in(rng, step)`, so the rng never
changes and a resumed run draws the same noise as one that never stopped.

`finite` is a sticky flag: once a step sees a non-finite loss or gradient
the step function stops applying updates (see `apply_update`), so the state
kept in memory is the last good one and the host can stop with a clear
message without having to wait on every step.
"""
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """A training state; a pytree of arrays only (no callables).

  Attributes:
    step: int32 scalar, number of updates applied so far.
    params: model parameters (float32 master copy; the model may compute in
      a lower precision, see config.model.dtype).
    ema_params: tuple of parameter trees, one per decay in `ema_decays`
      (same order as config.ema_decays).
    opt_state: optax state.
    rng: uint32[2] base key; steps use fold_in(rng, step).
    finite: bool scalar; False once a non-finite loss/grad has been seen.
  """
  step: jax.Array
  params: Any
  ema_params: tuple
  opt_state: Any
  rng: jax.Array
  finite: jax.Array


def validate_ema_decays(ema_decays: Sequence[float]) -> tuple:
  """Returns the decays as a tuple of floats in [0, 1)."""
  try:
    decays = tuple(float(d) for d in ema_decays)
  except TypeError:
    raise ValueError(
        f"ema_decays must be a sequence of floats, got {ema_decays!r}; "
        "e.g. config.ema_decays = (0.999,) or () for no EMA.") from None
  for d in decays:
    if not 0.0 <= d < 1.0:
      raise ValueError(
          f"every EMA decay must be in [0, 1), got {d} in {decays}; "
          "typical values are 0.999 or 0.9999.")
  return decays


def create(params, tx: optax.GradientTransformation, rng: jax.Array,
           ema_decays: Sequence[float]) -> TrainState:
  """Builds the initial state; EMA trees start equal to the params."""
  decays = validate_ema_decays(ema_decays)
  rng = jnp.asarray(rng)
  if rng.dtype != jnp.uint32 or rng.shape != (2,):
    raise ValueError(
        "rng must be a raw uint32[2] key (jax.random.PRNGKey(seed)), got "
        f"dtype {rng.dtype} shape {rng.shape}.")
  # Copies (not aliases) so donating the state never donates a buffer twice.
  ema = tuple(jax.tree.map(jnp.copy, params) for _ in decays)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, ema_params=ema,
      opt_state=tx.init(params), rng=rng, finite=jnp.ones((), jnp.bool_))


def ema_decay_at(decay: float, step) -> jax.Array:
  """Warmed-up decay min(decay, (1 + step) / (10 + step)).

  The EMA starts as a copy of the initial params; with a plain 0.999 decay
  it would still be 37 % initial weights after 1000 steps (zero-initialised
  output layers then give near-zero velocities and noisy samples). The
  warmup (as in tf.train.ExponentialMovingAverage with num_updates) lets it
  follow the params early and reach `decay` later.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params: tuple, params, ema_decays: Sequence[float],
               step=None):
  """ema <- d * ema + (1 - d) * params for every decay d (warmed up by
  `ema_decay_at` when `step`, the number of updates so far, is given)."""
  out = []
  for e, d in zip(ema_params, ema_decays):
    d = d if step is None else ema_decay_at(d, step)
    out.append(optax.incremental_update(params, e, step_size=1.0 - d))
  return tuple(out)


def apply_update(state: TrainState, grads, tx: optax.GradientTransformation,
                 ema_decays: Sequence[float], finite_now: jax.Array
                 ) -> TrainState:
  """One optimizer + EMA update, skipped once anything was non-finite.

  Args:
    state: current state.
    grads: gradient tree, same structure as state.params.
    tx: the optimizer.
    ema_decays: decays matching state.ema_params.
    finite_now: bool scalar, whether this step's loss and grads are finite.

  Returns:
    The new state. If `finite_now` is False, or an earlier step was already
    non-finite, every field except `finite` is returned unchanged, so the
    state stays the last good one.
  """
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(
      step=state.step + 1, params=params,
      ema_params=ema_update(state.ema_params, params, ema_decays,
                            state.step),
      opt_state=opt_state)
  ok = jnp.logical_and(state.finite, finite_now)
  # A select rather than lax.cond: it keeps donation simple and costs one
  # elementwise pass, small next to the forward/backward pass.
  kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
  return kept.replace(finite=ok)


def ema_by_decay(state: TrainState, ema_decays: Sequence[float],
                 decay=None):
  """The EMA tree for `decay` (default: the first one), or the raw params
  when there is no EMA."""
  decays = validate_ema_decays(ema_decays)
  if not decays:
    return state.params
  if decay is None:
    return state.ema_params[0]
  for d, tree in zip(decays, state.ema_params):
    if abs(d - float(decay)) < 1e-12:
      return tree
  raise ValueError(
      f"no EMA with decay {decay}; this run keeps decays {decays}. Set "
      "config.sample.ema_decay to one of them or to None for the first.")
