r"""K-Flow train-step time per transform against plain flow matching.

  python benchmarks/step.py            # digits model, every transform
  python benchmarks/step.py --quick    # smoke run

Same model, batch and data for all; only the transform (and its bands)
differs. Runs are interleaved (identity, fourier, ..., identity, fourier,
...) so machine noise hits all alike; the ratio per round is
t(transform) / t(identity) and the median over rounds is printed. Goal:
at most 1.03 (the transforms are small next to the network).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import loop  # noqa: E402  (benchmarks/loop.py: shared setup)
from kflow_jax import kamp  # noqa: E402

# Options for transforms that need them; pca fits its basis into a temp
# workdir on first use (experiment.build_transform).
TRANSFORM_OPTIONS = {"wavelet": dict(wavelet="haar", levels=1)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="digits_fm")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--steps", type=int, default=20, help="steps per timing")
  p.add_argument("--quick", action="store_true", help="smoke run")
  args = p.parse_args()
  rounds, steps = (2, 3) if args.quick else (args.rounds, args.steps)
  names = ["identity"] + [n for n in kamp.names() if n != "identity"]
  runs = {}
  for name in names:
    config = loop.load_config(args.config)
    if args.quick:
      config.model = type(config.model)(dict(name="dit", size="mu",
                                             patch_size=2, dtype="float32"))
    config.transform.name = name
    for k, v in TRANSFORM_OPTIONS.get(name, {}).items():
      config.transform[k] = v
    config.path.num_scales = 1 if name == "identity" else 2
    try:
      step_fn, state, batch, block = loop.bare_step(config)
      _, state = loop.time_bare(step_fn, state, batch, block, 1)  # compile
    except (ValueError, ImportError) as e:
      print(f"skipping {name}: {e}", file=sys.stderr)
      continue
    runs[name] = [step_fn, state, batch, block]
  times = {n: [] for n in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      step_fn, state, batch, block = run
      t = time.perf_counter()
      for _ in range(steps):
        state, m = step_fn(state, batch)
        if block:
          jax.block_until_ready(m["loss"])
      jax.block_until_ready(state)
      times[name].append((time.perf_counter() - t) / steps)
      run[1] = state
  base = times["identity"]
  out = {"config": args.config, "devices": jax.device_count(),
         "identity_ms": round(1e3 * statistics.median(base), 3)}
  for name in runs:
    if name == "identity":
      continue
    ratios = [a / b for a, b in zip(times[name], base)]
    out[name] = {"ms": round(1e3 * statistics.median(times[name]), 3),
                 "median_ratio": round(statistics.median(ratios), 3)}
  out["goal"] = "median_ratio <= 1.03"
  print(json.dumps(out))


if __name__ == "__main__":
  main()
