r"""Whole training loop vs the bare jitted step, same model, same process.

  python -m benchmarks.loop                      # digits U-Net-mu (CPU)
  python -m benchmarks.loop --dit_s --steps=6    # DiT-S/2, batch 64, 32x32
  python -m benchmarks.loop --quick              # smoke run

The loop is `train.train_and_evaluate` (input pipeline on a prefetch thread,
global batch assembly, EMA, non-finite check, logging, async checkpoints at
--checkpoint_every); its rate is taken from metrics.jsonl over the windows
after the first (which holds compilation). The bare step is the same jitted
train step run back to back on one batch already on the device. Prints the
ratio loop / bare; the goal is >= 0.9.
"""
import argparse
import importlib
import json
import os
import tempfile
import time

import jax

from kflow_jax.run import experiment
from kflow_jax.data import input_pipeline
from kflow_jax.infra import sharding
from kflow_jax.modes import train


def load_config(name: str, arg: str = ""):
  """configs/<name>.py with its config arguments, e.g. ("digits",
  "transform=identity")."""
  return importlib.import_module(f"configs.{name}").get_config(arg)


def set_model(config, **model) -> None:
  """config.model replaced by a backbone's options (`model`); how the run
  uses the backbone (model.scale_adaptive, read by experiment.setup) is
  kept."""
  config.model = type(config.model)(dict(
      model, scale_adaptive=config.model.scale_adaptive))


def bare_step(config, devices=None, return_run=False):
  """(step_fn, state, batch, block): the train step on a resident batch,
  built by the same `experiment.setup` as training.

  With return_run=True the experiment.Run is appended.
  """
  run = experiment.setup(config, tempfile.mkdtemp(prefix="kflow_bench_"),
                         "tool", devices=devices)
  step_fn = train.make_run_step(run)
  it = input_pipeline.create(config.input,
                             global_batch_size=int(config.batch_size),
                             seed=0)
  local = next(it)
  batch = sharding.global_batch(run.mesh, {k: local[k] for k in ("image",
                                                                 "label")})
  out = (step_fn, run.init_state(), batch, sharding.must_block(run.mesh))
  return out + (run,) if return_run else out


def time_bare(step_fn, state, batch, block, steps: int):
  """Steps per second of the bare step; returns (rate, state)."""
  state, m = step_fn(state, batch)          # compile / warm up
  jax.block_until_ready(m)
  run = [step_fn, state, batch, block]
  seconds = round_robin({"bare": run}, 1, steps)["bare"][0]
  return 1.0 / seconds, run[1]


def round_robin(runs: dict, rounds: int, steps: int) -> dict:
  """Seconds per step of each run, timed in turns: `rounds` times, each run
  takes `steps` steps, so a noisy machine slows every run alike and their
  ratios stay meaningful. runs: name -> [step_fn, state, batch, block]
  (warmed up; block: wait for each step's loss, as the CPU backend with
  several devices needs); each run's state is advanced in place. Returns
  name -> [seconds per step of each round]."""
  times = {n: [] for n in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      step_fn, state, batch, block = run[:4]
      t = time.perf_counter()
      for _ in range(steps):
        state, m = step_fn(state, batch)
        if block:
          jax.block_until_ready(m["loss"])
      jax.block_until_ready((state, m))
      times[name].append((time.perf_counter() - t) / steps)
      run[1] = state
  return times


def time_loop(config, workdir, devices=None, waits=None):
  """Steps per second of the full loop, excluding the first log window.

  If `waits` is a list, the seconds the loop waited for each batch (after
  the first log window) are appended to it.
  """
  recorded = []
  train.train_and_evaluate(
      config, workdir, devices=devices,
      on_step=lambda step, timing: recorded.append(timing["input_wait_s"]))
  if waits is not None:
    waits.extend(recorded[int(config.log_every_steps):])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # Window i covers steps (step_{i-1}, step_i]; the first one compiles.
  n = [b["step"] - a["step"] for a, b in zip(rows[:-1], rows[1:])]
  secs = [k * r["step_time_s"] for k, r in zip(n, rows[1:])]
  return sum(n) / sum(secs)


def main(argv=None):
  """Runs the benchmark, prints its JSON line and returns it as a dict."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="digits",
                 help="config in configs/ with optional arguments, e.g. "
                 "digits or digits:transform=wavelet")
  p.add_argument("--dit_s", action="store_true",
                 help="DiT-S/2 at batch 64 on 32x32 natural patches")
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--log_every", type=int, default=20)
  p.add_argument("--checkpoint_every", type=int, default=100)
  p.add_argument("--quick", action="store_true", help="smoke run")
  args = p.parse_args(argv)
  config = load_config(*args.config.split(":", 1))
  if args.dit_s:
    config = load_config("patches")
    config.input.image_size = 32
    set_model(config, name="dit", size="S", patch_size=2, dtype="float32")
    config.batch_size = 64
    config.path.gamma = 0.0
  steps, log_every = args.steps, args.log_every
  if args.quick:
    steps, log_every = 12, 3
    set_model(config, name="dit", size="mu", patch_size=2,
              dtype="float32")
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
  out = {
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
          3)}
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
