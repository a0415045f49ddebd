r"""One accelerator host: correctness first, then speed, in one table.

  python -m benchmarks.accelerator_check            # DiT-S/2 and DiT-L/2
  python -m benchmarks.accelerator_check --quick    # CPU smoke run (tests)
  python -m benchmarks.accelerator_check --sizes=S --batch=8 --dtype=float32
      # the DiT-S/2 K-Flow/FM step ratios on a CPU

Checks (on every local device):
  * the train-step loss on 1 device equals the loss on all local devices
    (the same global batch and keys; data-parallel all-reduce);
  * the bfloat16 model's loss is close to the float32 model's (same params).
Measures, for each backbone and transform (identity = plain flow matching,
fourier, dct, wavelet db6), the bf16 train-step time (median of timed
steps after warm-up, transforms taking turns), the step time ratio against
identity, the model FLOPs of a step from XLA's cost analysis of forward +
backward, achieved TFLOP/s per device and MFU against the device's bf16
peak; then sampling throughput (Euler, 40 steps) of the first backbone.
Data: natural patches at 32x32x3 (embedded, no download); the FLOPs of a
DiT-x/2 at 32x32x4 latents differ only in the patch embedding.
"""
import argparse
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import loop
from kflow_jax.run import experiment
from kflow_jax.generate import sample_set
from kflow_jax import models
# The peak table lives in kflow_jax.infra.flops, shared with the training log.
from kflow_jax.infra.flops import peak_tflops
from kflow_jax.infra.flops import utilization

TRANSFORMS = {"identity": {}, "fourier": {}, "dct": {},
              "wavelet": dict(wavelet="db6", levels=2)}


def config(size: str, transform: str, batch: int, dtype: str):
  c = loop.load_config("patches", f"transform={transform}")
  c.input.image_size = 32
  c.input.num_threads = 1
  c.batch_size = batch
  c.path.gamma = 0.0
  c.path.num_scales = 1 if transform == "identity" else 2
  for k, v in TRANSFORMS[transform].items():
    c.transform[k] = v
  loop.set_model(c, name="dit", size=size, patch_size=2, dtype=dtype)
  return c


def step_flops(run, batch) -> float:
  """Forward + backward FLOPs of the model on the batch (XLA count)."""
  variables = {"params": jax.tree.map(np.asarray,
                                      run.init_state().params)}
  x = jnp.asarray(batch["image"])
  t = jnp.full((x.shape[0],), 0.5, jnp.float32)
  return models.flops(run.model, variables, x, t, None, backward=True)


def correctness(size: str, batch: int) -> dict:
  """Loss on 1 device vs all local devices; bf16 vs fp32 loss.

  adaLN-Zero makes a fresh DiT output exactly 0, which would make every
  loss equal whatever the precision, and a few warm-up steps barely move
  its gates (the losses then agreed to 2e-7, a check that could not
  fail); the comparison therefore runs on the initial params plus
  N(0, 0.02^2) noise on every weight, the same params for every run.
  """
  _, state, _, _, ref = loop.bare_step(
      config(size, "fourier", batch, "float32"), return_run=True)
  leaves, treedef = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
  params = treedef.unflatten([
      p + 0.02 * jax.random.normal(k, p.shape, p.dtype)
      for p, k in zip(leaves, keys)])
  trained = jax.device_get(state.replace(params=params))
  losses = {}
  for name, devices, dtype in (("1dev_fp32", jax.local_devices()[:1],
                                "float32"),
                               ("all_fp32", jax.local_devices(), "float32"),
                               ("all_bf16", jax.local_devices(), "bfloat16")):
    fn, _, batch_, _, run = loop.bare_step(
        config(size, "fourier", batch, dtype), devices=devices,
        return_run=True)
    _, m = fn(jax.device_put(trained, run.state_shardings), batch_)
    losses[name] = float(m["loss"])
  del ref
  out = {"loss_1dev": losses["1dev_fp32"], "loss_alldev": losses["all_fp32"],
         "loss_bf16": losses["all_bf16"]}
  out["loss_1_vs_all_rel"] = abs(losses["1dev_fp32"] - losses["all_fp32"]
                                 ) / abs(losses["all_fp32"])
  out["loss_bf16_vs_fp32_rel"] = abs(losses["all_bf16"] - losses[
      "all_fp32"]) / abs(losses["all_fp32"])
  return out


def speed(size: str, batch: int, rounds: int, steps: int,
          dtype: str = "bfloat16") -> list:
  runs = {}
  for name in TRANSFORMS:
    step_fn, state, b, block, run = loop.bare_step(
        config(size, name, batch, dtype), return_run=True)
    state, m = step_fn(state, b)
    jax.block_until_ready(m)
    runs[name] = [step_fn, state, b, False, run]
  # Run entries are [step_fn, state, batch, block, run]; the accelerator
  # blocks once per timing, not per step.
  times = loop.round_robin(runs, rounds, steps)
  ndev = jax.local_device_count()
  flops = step_flops(runs["identity"][4], runs["identity"][2])
  rows = []
  base = times["identity"]
  for name in runs:
    med = statistics.median(times[name])
    use = utilization(flops, 1 / med, ndev, jax.local_devices()[0])
    rows.append({
        "model": f"DiT-{size}/2", "transform": name, "batch": batch,
        "dtype": dtype,
        "step_ms": round(1e3 * med, 3),
        "ratio_vs_fm": round(statistics.median(
            [a / b for a, b in zip(times[name], base)]), 4),
        "gflops_per_step": round(flops / 1e9, 2),
        "tflops_per_device": round(use["tflops_per_s_per_device"], 2),
        "mfu": round(use["mfu"], 4) if "mfu" in use else None})
  return rows


def sampling(size: str, batch: int) -> dict:
  c = config(size, "fourier", batch, "bfloat16")
  c.sample.num_steps = 40
  c.sample.batch_size = batch
  run = experiment.setup(c, tempfile.mkdtemp(prefix="kflow_acc_"), "tool")
  params = run.init_state().params
  fn, chunk = sample_set.make_chunk_fn(run)
  jax.block_until_ready(fn(params, np.int32(0)))
  reps = 3
  t = time.perf_counter()
  for i in range(reps):
    out = fn(params, np.int32((i + 1) * chunk))
  jax.block_until_ready(out)
  dt = (time.perf_counter() - t) / reps
  return {"model": f"DiT-{size}/2", "solver": "euler", "nfe": 40,
          "chunk": chunk, "samples_per_s": round(chunk / dt, 1)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="CPU smoke run")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--rounds", type=int, default=10)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--sizes", default="S,L", help="DiT sizes (models/dit.py)")
  # The CPU has no fast bf16 matmul: there the K-Flow/FM ratios are
  # measured in float32.
  p.add_argument("--dtype", default="bfloat16",
                 help="dtype of the timed steps (float32 on a CPU)")
  args = p.parse_args()
  sizes = ["mu"] if args.quick else args.sizes.split(",")
  batch = 2 * jax.local_device_count() if args.quick else args.batch
  rounds, steps = (1, 1) if args.quick else (args.rounds, args.steps)
  dev = jax.local_devices()[0]
  report = {"device": dev.device_kind, "platform": dev.platform,
            "local_devices": jax.local_device_count(),
            "jax": jax.__version__,
            "peak_bf16_tflops": peak_tflops(dev)}
  report["correctness"] = correctness(sizes[0], batch)
  report["steps"] = [row for s in sizes
                     for row in speed(s, batch, rounds, steps, args.dtype)]
  report["sampling"] = sampling(sizes[0], batch)
  print(json.dumps(report))
  print(f"\n{report['device']} x{report['local_devices']}, jax "
        f"{report['jax']}; loss 1 vs all devices rel "
        f"{report['correctness']['loss_1_vs_all_rel']:.2e}, bf16 vs fp32 "
        f"rel {report['correctness']['loss_bf16_vs_fp32_rel']:.2e}")
  print("| model | transform | step ms | K-Flow/FM | GFLOP/step | "
        "TFLOP/s/dev | MFU |")
  print("|---|---|---|---|---|---|---|")
  for r in report["steps"]:
    print(f"| {r['model']} | {r['transform']} | {r['step_ms']} | "
          f"{r['ratio_vs_fm']} | {r['gflops_per_step']} | "
          f"{r['tflops_per_device']} | {r['mfu']} |")
  s = report["sampling"]
  print(f"sampling {s['model']} {s['solver']} NFE {s['nfe']}: "
        f"{s['samples_per_s']} samples/s (chunk {s['chunk']})")


if __name__ == "__main__":
  main()
