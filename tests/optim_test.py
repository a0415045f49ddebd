"""optim: schedules and the optax chain from config."""
import numpy as np
import optax
import pytest

from kflow_jax import config_lib
from kflow_jax.run import optim


def _cfg(**kw):
  c = config_lib.base().optim
  c.update(kw)
  return c


def test_cosine_warmup_then_decay_to_end():
  sched = optim.make_schedule(
      _cfg(learning_rate=1e-2, warmup_steps=10, end_lr_factor=0.1), 110)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 5e-3, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 1e-2, rtol=1e-6)
  np.testing.assert_allclose(float(sched(110)), 1e-3, rtol=1e-5)
  # Monotone decay after warmup.
  vals = [float(sched(s)) for s in range(10, 111, 10)]
  assert all(a >= b for a, b in zip(vals[:-1], vals[1:]))


def test_constant_schedule_with_and_without_warmup():
  s = optim.make_schedule(_cfg(schedule="constant", warmup_steps=4,
                               learning_rate=2.0), 100)
  assert [float(s(i)) for i in (0, 2, 4, 50)] == [0.0, 1.0, 2.0, 2.0]
  s = optim.make_schedule(_cfg(schedule="constant", warmup_steps=0,
                               learning_rate=2.0), 100)
  assert float(s(0)) == 2.0


def test_clipping_bounds_the_update():
  tx, _ = optim.make_optimizer(
      _cfg(learning_rate=1.0, warmup_steps=0, schedule="constant",
           grad_clip_norm=0.5), 10)
  params = {"w": np.zeros(3, np.float32)}
  state = tx.init(params)
  grads = {"w": np.array([300.0, 400.0, 0.0], np.float32)}
  # The chain's first element clips to norm 0.5 before Adam.
  clip = optax.clip_by_global_norm(0.5)
  clipped, _ = clip.update(grads, clip.init(params))
  np.testing.assert_allclose(optax.global_norm(clipped), 0.5, rtol=1e-5)
  updates, _ = tx.update(grads, state, params)
  assert np.all(np.isfinite(updates["w"]))


@pytest.mark.parametrize("kw,total,msg", [
    (dict(schedule="linear"), 10, "schedule"),
    (dict(learning_rate=0.0), 10, "learning_rate"),
    (dict(warmup_steps=-1), 10, "warmup_steps"),
    (dict(b2=1.0), 10, "b2"),
    (dict(grad_clip_norm=-1.0), 10, "grad_clip_norm"),
    (dict(end_lr_factor=2.0), 10, "end_lr_factor"),
    ({}, 0, "total_steps"),
])
def test_bad_values_raise_clear_errors(kw, total, msg):
  with pytest.raises(ValueError, match=msg):
    optim.make_optimizer(_cfg(**kw), total)
