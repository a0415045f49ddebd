r"""Whole training loop vs the bare jitted step, same model, same process.

  python benchmarks/loop.py                      # digits U-Net-mu (CPU)
  python benchmarks/loop.py --dit_s --steps=6    # DiT-S/2, batch 64, 32x32
  python benchmarks/loop.py --quick              # smoke run

The loop is `train.train_and_evaluate` (input pipeline on a prefetch thread,
global batch assembly, EMA, non-finite check, logging, async checkpoints at
--checkpoint_every); its rate is taken from metrics.jsonl over the windows
after the first (which holds compilation). The bare step is the same jitted
train step run back to back on one batch already on the device. Prints the
ratio loop / bare; the goal is >= 0.9.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from kflow_jax import experiment  # noqa: E402
from kflow_jax import input_pipeline  # noqa: E402
from kflow_jax import optim  # noqa: E402
from kflow_jax import sharding  # noqa: E402
from kflow_jax import train  # noqa: E402
from kflow_jax import train_state  # noqa: E402


def load_config(name: str, arg: str = ""):
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f"configs.{name}").get_config(arg)


def bare_step(config, devices=None, return_experiment=False):
  """(step_fn, state, batch, block): the train step on a resident batch.

  With return_experiment=True the experiment.Experiment is appended.
  """
  mesh = sharding.make_mesh(config.mesh.fsdp, devices)
  exp = experiment.build(config, tempfile.mkdtemp(prefix="kflow_bench_"))
  tx, schedule = optim.make_optimizer(config.optim, int(config.total_steps))
  decays = train_state.validate_ema_decays(config.ema_decays)
  init, state_sh, _ = train.make_state_init(exp, tx, decays, mesh,
                                            config.seed)
  step_fn = train.make_train_step(
      experiment.make_loss(exp, config), tx, schedule, mesh,
      decays, state_sh)
  it = input_pipeline.create(config.input,
                             global_batch_size=int(config.batch_size),
                             seed=0)
  local = next(it)
  batch = sharding.global_batch(mesh, {k: local[k] for k in ("image",
                                                             "label")})
  out = (step_fn, init(), batch, sharding.must_block(mesh))
  return out + (exp,) if return_experiment else out


def time_bare(step_fn, state, batch, block, steps: int):
  """Steps per second of the bare step; returns (rate, state)."""
  state, m = step_fn(state, batch)          # compile / warm up
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step_fn(state, batch)
    if block:
      jax.block_until_ready(m["loss"])
  jax.block_until_ready((state, m))
  return steps / (time.perf_counter() - t), state


class _InputWaits:
  """Times how long the training thread waits for the prefetched batches
  (train.Prefetcher.__next__) during one loop: the input pipeline's share
  of the loop/bare gap. The rest is the host work between steps (EMA is
  in the step; logging, finite checks, checkpoints are not)."""

  def __init__(self):
    self.waits = []

  def __enter__(self):
    self._orig = train.Prefetcher.__next__
    orig, waits = self._orig, self.waits

    def timed_next(prefetcher):
      start = time.perf_counter()
      try:
        return orig(prefetcher)
      finally:
        waits.append(time.perf_counter() - start)
    train.Prefetcher.__next__ = timed_next
    return self

  def __exit__(self, *exc):
    train.Prefetcher.__next__ = self._orig


def time_loop(config, workdir, devices=None, waits=None):
  """Steps per second of the full loop, excluding the first log window.

  If `waits` is a list, the seconds the loop waited for each batch (after
  the first log window) are appended to it.
  """
  with _InputWaits() as recorder:
    train.train_and_evaluate(config, workdir, devices=devices)
  if waits is not None:
    waits.extend(recorder.waits[int(config.log_every_steps):])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # Window i covers steps (step_{i-1}, step_i]; the first one compiles.
  n = [b["step"] - a["step"] for a, b in zip(rows[:-1], rows[1:])]
  secs = [k * r["step_time_s"] for k, r in zip(n, rows[1:])]
  return sum(n) / sum(secs)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="digits_fourier",
                 help="config module in configs/ (default digits_fourier)")
  p.add_argument("--dit_s", action="store_true",
                 help="DiT-S/2 at batch 64 on 32x32 natural patches")
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--log_every", type=int, default=20)
  p.add_argument("--checkpoint_every", type=int, default=100)
  p.add_argument("--quick", action="store_true", help="smoke run")
  args = p.parse_args()
  config = load_config(args.config)
  if args.dit_s:
    config = load_config("patches_fourier")
    config.input.image_size = 32
    config.model = type(config.model)(dict(name="dit", size="S",
                                           patch_size=2, dtype="float32"))
    config.batch_size = 64
    config.path.gamma = 0.0
  steps, log_every = args.steps, args.log_every
  if args.quick:
    steps, log_every = 12, 3
    config.model = type(config.model)(dict(name="dit", size="mu",
                                           patch_size=2, dtype="float32"))
  if args.dit_s and not args.quick:
    log_every = max(1, min(log_every, steps // 3))
  config.total_steps = steps
  config.log_every_steps = log_every
  config.checkpoint_every_steps = args.checkpoint_every
  config.sample_every_steps = 0
  config.sample.at_end = False
  bare_steps = max(3, steps - log_every)
  step_fn, state, batch, block = bare_step(config)
  bare1, state = time_bare(step_fn, state, batch, block, bare_steps)
  waits = []
  with tempfile.TemporaryDirectory() as wd:
    loop = time_loop(config, wd, waits=waits)
  bare2, _ = time_bare(step_fn, state, batch, block, bare_steps)
  bare = 0.5 * (bare1 + bare2)
  print(json.dumps({
      "model": config.model.to_dict(),
      "data": config.input.name, "batch": int(config.batch_size),
      "devices": jax.device_count(), "bare_steps_per_s": round(bare, 3),
      "bare_runs": [round(bare1, 3), round(bare2, 3)],
      "loop_steps_per_s": round(loop, 3),
      "loop_over_bare": round(loop / bare, 3), "goal": ">= 0.9",
      # Per step after the first window: host time blocked on input, and
      # the rest of the loop's extra time over the bare step.
      "input_wait_ms": round(1e3 * sum(waits) / max(1, len(waits)), 3),
      "other_overhead_ms": round(
          1e3 * (1 / loop - 1 / bare) - 1e3 * sum(waits) / max(1, len(waits)),
          3)}))


if __name__ == "__main__":
  main()
