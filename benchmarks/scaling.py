r"""Train-step time and peak memory against image size and device count.

  python -m benchmarks.scaling            # 32..256 px; 1, 2, 4, 8 devices
  python -m benchmarks.scaling --quick    # tiny sizes, 1 and 2 devices

Size: the real train step (experiment.setup + train.make_run_step) of a
small backbone (--model: DiT-mu with --patch, or the U-Net-mu with four
levels) at each --sizes x --sizes input, for pixel-like (3) and
latent-like (4) channel counts (--channels) and each --transforms (identity
= plain flow matching, fourier = K-Flow with two bands), at one global
batch on one device. The input shape is set directly (no data set is
read: the step runs on a resident random batch), so any size and channel
count can be measured.

Devices: the same step at --device_size on K = --devices fake CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=K, one subprocess per K,
as the flag is read once at start-up), at one global batch, so the work is
constant and the fit shows what splitting it costs or gains. The fake
devices share this machine's cores: on the CPU this measures the overhead
of data parallelism (collectives, per-device launch), not real speed-up.

Peak memory is XLA's own accounting of the compiled step
(compiled.memory_analysis(): arguments + outputs + temporaries, less the
outputs that reuse donated arguments, per device), because the CPU
backend has no device.memory_stats(); on a GPU or TPU this is the same
static estimate, not a measured peak. FLOPs are XLA's cost analysis.

Growth exponents: least squares of log y on log x (y ~ c x^b) over each
series, with r^2; against the side length S (pixels grow as S^2, so b/2 is
the exponent per pixel) and against the device count K.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import loop
from kflow_jax.run import experiment
from kflow_jax.infra import sharding
from kflow_jax.modes import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fit_exponent(x, y) -> dict:
  """y ~ c * x ** b by least squares on logs: {exponent, prefactor, r2}."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.size < 2 or np.any(x <= 0) or np.any(y <= 0):
    raise ValueError(
        f"need at least two positive (x, y) pairs, got x={x.tolist()}, "
        f"y={y.tolist()}.")
  lx, ly = np.log(x), np.log(y)
  if np.ptp(lx) == 0:
    raise ValueError(f"x must take at least two values, got {x.tolist()}.")
  b, a = np.polyfit(lx, ly, 1)
  resid = ly - (a + b * lx)
  total = np.sum((ly - ly.mean()) ** 2)
  r2 = 1.0 - np.sum(resid ** 2) / total if total > 0 else 1.0
  return {"exponent": round(float(b), 4), "prefactor": float(np.exp(a)),
          "r2": round(float(r2), 4)}


def make_config(base: str, model: str, patch: int, transform: str,
                batch: int):
  """The config `base` (configs/<name>.py[:args]) with the backbone and
  transform; the input shape is given to setup (`shaped_run`), not read
  from data."""
  name, _, arg = base.partition(":")
  c = loop.load_config(name, ",".join(
      filter(None, [f"transform={transform}", arg])))
  if model == "dit":
    loop.set_model(c, name="dit", size="mu", patch_size=patch,
                   dtype="float32")
  else:
    # Four levels, so the middle block's attention runs at S/8 x S/8 (the
    # two-level U-Net-mu would attend over (S/2)^2 tokens at 256 px).
    loop.set_model(c, name="unet", size="mu", channel_mult=(1, 2, 2, 2),
                   dtype="float32")
  c.batch_size = batch
  c.path.num_scales = 1 if transform == "identity" else 2
  return c


def shaped_run(config, shape, devices=None):
  """experiment.setup for inputs of `shape` (H, W, C) instead of the data
  set's (setup's shape override; nothing is read from the data)."""
  return experiment.setup(config, None, "tool", devices=devices,
                          shape=tuple(shape))


def _cost(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def measure(config, shape, steps: int, devices=None) -> dict:
  """Step time (median of `steps` after a warm-up), XLA's memory and FLOPs
  of the compiled train step."""
  run = shaped_run(config, shape, devices)
  step_fn = train.make_run_step(run)
  b = int(config.batch_size)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(run.mesh, {
      "image": rng.standard_normal((b,) + tuple(shape)).astype(np.float32),
      "label": np.zeros((b,), np.int32)})
  state = run.init_state()
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes
          + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  state, m = compiled(state, batch)  # warm-up
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - start)
  return {"step_ms": round(1e3 * statistics.median(times), 3),
          "peak_mb": round(peak / 2**20, 3),
          "temp_mb": round(mem.temp_size_in_bytes / 2**20, 3),
          "argument_mb": round(mem.argument_size_in_bytes / 2**20, 3),
          "gflops": round(_cost(compiled) / 1e9, 4),
          "compile_s": round(compile_s, 2), "devices": run.mesh.size}


def size_sweep(args) -> list:
  rows = []
  one = jax.devices()[:1]  # equal footing: one device for every size
  for transform in args.transforms:
    for c in args.channels:
      for s in args.sizes:
        config = make_config(args.config, args.model, args.patch, transform,
                             args.batch)
        row = {"transform": transform, "channels": c, "size": s,
               "batch": args.batch}
        row.update(measure(config, (s, s, c), args.steps, one))
        rows.append(row)
        print(f"  {transform:8s} {s:4d}x{s}x{c}  {row['step_ms']:10.2f} ms  "
              f"{row['peak_mb']:9.2f} MB  {row['gflops']:9.3f} GFLOP",
              file=sys.stderr, flush=True)
  return rows


def child_env(k: int) -> dict:
  """The environment of a subprocess with k fake CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + (
      os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH")
      else ""))
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(
      flags + [f"--xla_force_host_platform_device_count={k}"])
  # A compilation cache configured in this process (run_all --quick) is
  # shared with the children through the environment.
  cache = jax.config.jax_compilation_cache_dir
  if cache:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def device_sweep(args) -> list:
  rows = []
  for k in args.devices:
    if args.batch_devices % k:
      raise ValueError(f"--batch_devices={args.batch_devices} must divide "
                       f"by every device count, not by {k}.")
    cmd = [sys.executable, "-m", "benchmarks.scaling", f"--child={k}",
           f"--config={args.config}", f"--model={args.model}", f"--patch={args.patch}",
           f"--transforms={args.transforms[-1]}",
           f"--channels={args.channels[0]}",
           f"--sizes={args.device_size}", f"--batch={args.batch_devices}",
           f"--steps={args.steps}"]
    p = subprocess.run(cmd, cwd=REPO, env=child_env(k), capture_output=True,
                       text=True, timeout=args.child_timeout)
    if p.returncode:
      raise RuntimeError(f"scaling child with {k} devices failed:\n"
                         f"{p.stderr[-3000:]}")
    row = json.loads(p.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f"  {k} devices  {row['step_ms']:10.2f} ms  {row['peak_mb']:9.2f} "
          "MB/device", file=sys.stderr, flush=True)
  return rows


def fits(sizes, devices) -> dict:
  out = {}
  for transform in sorted({r["transform"] for r in sizes}):
    for c in sorted({r["channels"] for r in sizes}):
      rows = [r for r in sizes if r["transform"] == transform
              and r["channels"] == c]
      if len(rows) < 2:
        continue
      s = [r["size"] for r in rows]
      out[f"{transform} C={c}"] = {
          key: fit_exponent(s, [r[key] for r in rows])
          for key in ("step_ms", "peak_mb", "gflops")
          if all(r[key] > 0 for r in rows)}
  if len(devices) >= 2:
    k = [r["devices"] for r in devices]
    out["devices"] = {key: fit_exponent(k, [r[key] for r in devices])
                      for key in ("step_ms", "peak_mb")}
  return out


def print_tables(res: dict) -> None:
  print(f"\nscaling: {res['model_name']}, batch {res['batch']}, 1 device; "
        "peak = XLA memory analysis of the compiled step")
  print(f"{'transform':9s} {'size':>10s} {'step ms':>10s} {'peak MB':>9s} "
        f"{'GFLOP':>9s} {'vs identity':>11s}")
  base = {(r["channels"], r["size"]): r["step_ms"] for r in res["sizes"]
          if r["transform"] == "identity"}
  for r in res["sizes"]:
    ref = base.get((r["channels"], r["size"]))
    ratio = f"{r['step_ms'] / ref:11.3f}" if ref else f"{'':11s}"
    print(f"{r['transform']:9s} {r['size']:>4d}x{r['size']}x{r['channels']} "
          f"{r['step_ms']:10.2f} {r['peak_mb']:9.2f} {r['gflops']:9.3f} "
          f"{ratio}")
  if res["devices"]:
    d0 = res["devices"][0]
    print(f"\ndevices (fake CPU), global batch {res['batch_devices']}, "
          f"{res['device_size']}x{res['device_size']}x{res['channels'][0]}, "
          f"{res['devices'][0]['transform']}")
    print(f"{'devices':>7s} {'step ms':>10s} {'vs 1':>6s} {'peak MB/dev':>12s}")
    for r in res["devices"]:
      print(f"{r['devices']:7d} {r['step_ms']:10.2f} "
            f"{r['step_ms'] / d0['step_ms']:6.2f} {r['peak_mb']:12.2f}")
  print("\ngrowth exponents (y ~ x^b, least squares on logs; x = side S for "
        "sizes, K for devices):")
  for name, f in res["fits"].items():
    print(f"  {name:14s} " + "  ".join(
        f"{k} b={v['exponent']:.3f} (r2 {v['r2']:.3f})"
        for k, v in f.items()))


def main(argv=None):
  """Runs the benchmark, prints its tables and returns the results dict."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
  p.add_argument("--config", default="digits",
                 help="base config (optimizer, EMA, path options); its data "
                 "set is not read")
  p.add_argument("--model", default="dit", choices=("dit", "unet"))
  p.add_argument("--patch", type=int, default=4, help="DiT patch size")
  p.add_argument("--sizes", default="32,64,128,256")
  p.add_argument("--channels", default="3,4",
                 help="3: pixels; 4: SD-VAE latent channels")
  p.add_argument("--transforms", default="identity,fourier")
  p.add_argument("--batch", type=int, default=4,
                 help="global batch of the size sweep")
  p.add_argument("--devices", default="1,2,4,8")
  p.add_argument("--device_size", type=int, default=32)
  p.add_argument("--batch_devices", type=int, default=16,
                 help="global batch of the device sweep")
  p.add_argument("--steps", type=int, default=3, help="timed steps")
  p.add_argument("--child_timeout", type=int, default=900)
  p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    # The 16x16x1 points are the digits runlocal K-Flow step that the step
    # and sampling benchmarks also compile: under run_all --quick the
    # compilation cache then serves them, and the smoke run stays short.
    args.config, args.patch, args.sizes, args.channels = (
        "digits:runlocal", 2, "8,16", "1")
    args.transforms, args.batch, args.devices = "fourier", 16, "1,2"
    args.device_size, args.batch_devices, args.steps = 16, 16, 2
  args.sizes = [int(v) for v in str(args.sizes).split(",")]
  args.channels = [int(v) for v in str(args.channels).split(",")]
  args.transforms = str(args.transforms).split(",")
  args.devices = [int(v) for v in str(args.devices).split(",") if v]
  if args.child:
    # One device-sweep point: this process sees `child` devices.
    config = make_config(args.config, args.model, args.patch,
                         args.transforms[0], args.batch)
    s, c = args.sizes[0], args.channels[0]
    row = {"transform": args.transforms[0], "channels": c, "size": s,
           "batch": args.batch}
    row.update(measure(config, (s, s, c), args.steps))
    print(json.dumps(row))
    return row
  res = {"model": args.model, "model_name": (
      f"DiT-mu/{args.patch}" if args.model == "dit" else
      "U-Net-mu (1,2,2,2)"), "batch": args.batch, "channels": args.channels,
         "device_size": args.device_size, "batch_devices": args.batch_devices,
         "platform": jax.devices()[0].platform}
  res["sizes"] = size_sweep(args)
  res["devices"] = device_sweep(args)
  res["fits"] = fits(res["sizes"], res["devices"])
  print_tables(res)
  return res


if __name__ == "__main__":
  main()
