r"""K-Flow train-step time per transform against plain flow matching.

  python -m benchmarks.step            # digits model, every transform
  python -m benchmarks.step --quick    # smoke run

Same model, batch and data for all; only the transform (and its bands)
differs. Two measurements:

* step: the transforms take turns step by step (identity, fourier, ...,
  identity, fourier, ...), so a burst of load from other processes hits
  neighbouring steps alike. Per round, ratio = t(transform) / t(identity);
  the median over rounds is printed, and min_ratio = min t / min t (the
  least disturbed steps). Goal: median_ratio at most 1.03.
* path_us: the transform's own share, timed alone: the jitted
  paths.interpolate_and_target (one forward, one stacked inverse) at the
  step's batch, in microseconds and as a fraction of the identity step.
  On a shared machine this is the stable number; the step ratios carry the
  machine's noise (several % between rounds on 2 busy cores).
"""
import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks import loop
from kflow_jax import kamp
from kflow_jax.flow import paths

# Options for transforms that need them; pca fits its basis into a temp
# workdir on first use (experiment.setup).
TRANSFORM_OPTIONS = {"wavelet": dict(wavelet="haar", levels=1)}


def path_time_us(path, x1, repeats: int = 200) -> float:
  """Median time of the jitted (x_t, u_t) computation on x1's shape."""
  x1 = jnp.asarray(x1, jnp.float32)
  x0 = jax.random.normal(jax.random.key(0), x1.shape, jnp.float32)
  t = jax.random.uniform(jax.random.key(1), (x1.shape[0],), jnp.float32)
  fn = jax.jit(lambda a, b, s: paths.interpolate_and_target(path, a, b, s))
  jax.block_until_ready(fn(x0, x1, t))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(x0, x1, t))
    times.append(time.perf_counter() - start)
  return 1e6 * statistics.median(times)


def main(argv=None):
  """Runs the benchmark, prints its JSON line and returns it as a dict."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="digits")
  p.add_argument("--rounds", type=int, default=40)
  p.add_argument("--steps", type=int, default=2, help="steps per timing")
  p.add_argument("--transforms", default="",
                 help="comma-separated subset of the transforms (identity is "
                 "always run, as the baseline); empty: all")
  p.add_argument("--quick", action="store_true", help="smoke run")
  args = p.parse_args(argv)
  rounds, steps = (2, 1) if args.quick else (args.rounds, args.steps)
  if rounds < 1 or steps < 1:
    raise ValueError(f"--rounds and --steps must be >= 1, got {rounds}, "
                     f"{steps}.")
  names = ["identity"] + [n for n in kamp.names() if n != "identity"]
  if args.transforms:
    wanted = set(args.transforms.split(","))
    unknown = wanted - set(names)
    if unknown:
      raise ValueError(f"--transforms: unknown {sorted(unknown)}; valid: "
                       f"{names}.")
    names = [n for n in names if n == "identity" or n in wanted]
  runs, path_us = {}, {}
  for name in names:
    config = loop.load_config(*args.config.split(":", 1))
    if args.quick:
      loop.set_model(config, name="dit", size="mu", patch_size=2,
                     dtype="float32")
    config.transform.name = name
    for k, v in TRANSFORM_OPTIONS.get(name, {}).items():
      config.transform[k] = v
    config.path.num_scales = 1 if name == "identity" else 2
    try:
      step_fn, state, batch, block, exp = loop.bare_step(
          config, return_run=True)
      _, state = loop.time_bare(step_fn, state, batch, block, 1)  # compile
    except (ValueError, ImportError) as e:
      print(f"skipping {name}: {e}", file=sys.stderr)
      continue
    runs[name] = [step_fn, state, batch, block]
    path_us[name] = path_time_us(exp.path, batch["image"],
                                 20 if args.quick else 200)
  times = loop.round_robin(runs, rounds, steps)
  base = times["identity"]
  base_ms = 1e3 * statistics.median(base)
  out = {"config": args.config, "devices": jax.device_count(),
         "rounds": rounds, "steps_per_timing": steps,
         "identity_ms": round(base_ms, 3),
         "identity_path_us": round(path_us["identity"], 1)}
  for name in runs:
    if name == "identity":
      continue
    ratios = [a / b for a, b in zip(times[name], base)]
    out[name] = {"ms": round(1e3 * statistics.median(times[name]), 3),
                 "median_ratio": round(statistics.median(ratios), 3),
                 "min_ratio": round(min(times[name]) / min(base), 3),
                 "path_us": round(path_us[name], 1),
                 "path_share": round(1e-3 * path_us[name] / base_ms, 5)}
  out["goal"] = "median_ratio <= 1.03"
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
