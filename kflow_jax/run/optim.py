"""Optimizer from config: AdamW, warmup + cosine/constant, gradient clipping.

All of it is optax; this module only turns `config.optim` into a chain and
checks the values, so a typo fails at start-up and not after compilation.

config.optim keys (defaults: config_lib.sections.optim_defaults):
  learning_rate: peak learning rate.
  warmup_steps: linear warmup from 0 to the peak.
  schedule: "cosine" (decay to end_lr_factor * peak at total_steps) or
    "constant" (the LFM recipe, docs/method.md#paper-gaps).
  end_lr_factor: final learning rate as a fraction of the peak (cosine).
  b1, b2, eps, weight_decay: AdamW.
  grad_clip_norm: clip by global norm; 0 disables clipping.
"""
import ml_collections
import optax

SCHEDULES = ("cosine", "constant")


def _check(cfg, total_steps):
  if int(total_steps) < 1:
    raise ValueError(
        f"config.total_steps must be >= 1, got {total_steps}.")
  if cfg.schedule not in SCHEDULES:
    raise ValueError(
        f"Unknown config.optim.schedule {cfg.schedule!r}; valid names: "
        f"{list(SCHEDULES)}.")
  if not cfg.learning_rate > 0:
    raise ValueError(
        f"config.optim.learning_rate must be > 0, got {cfg.learning_rate}.")
  if int(cfg.warmup_steps) < 0:
    raise ValueError(
        f"config.optim.warmup_steps must be >= 0, got {cfg.warmup_steps}.")
  if not 0.0 <= cfg.end_lr_factor <= 1.0:
    raise ValueError(
        "config.optim.end_lr_factor must be in [0, 1], got "
        f"{cfg.end_lr_factor}.")
  for key in ("b1", "b2"):
    if not 0.0 <= cfg[key] < 1.0:
      raise ValueError(f"config.optim.{key} must be in [0, 1), got "
                       f"{cfg[key]}.")
  if cfg.weight_decay < 0 or cfg.grad_clip_norm < 0 or cfg.eps <= 0:
    raise ValueError(
        "config.optim.weight_decay and grad_clip_norm must be >= 0 and eps "
        f"> 0; got {cfg.weight_decay}, {cfg.grad_clip_norm}, {cfg.eps}.")


def make_schedule(cfg: ml_collections.ConfigDict,
                  total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step (0-based update count)."""
  _check(cfg, total_steps)
  peak = float(cfg.learning_rate)
  warmup = min(int(cfg.warmup_steps), int(total_steps))
  if cfg.schedule == "constant":
    if warmup == 0:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup),
         optax.constant_schedule(peak)], [warmup])
  # warmup_cosine_decay_schedule needs decay_steps > warmup_steps.
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(int(total_steps), warmup + 1),
      end_value=peak * float(cfg.end_lr_factor))


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int):
  """Returns (tx, schedule) for `config.optim`."""
  schedule = make_schedule(cfg, total_steps)
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  parts.append(optax.adamw(
      learning_rate=schedule, b1=float(cfg.b1), b2=float(cfg.b2),
      eps=float(cfg.eps), weight_decay=float(cfg.weight_decay)))
  return optax.chain(*parts), schedule
