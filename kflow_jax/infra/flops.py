"""Model FLOPs utilisation: FLOPs of a step, achieved TFLOP/s, MFU.

  compiled = jax.jit(step).lower(state, batch).compile()
  per_device = step_flops(compiled)                 # one device's program
  utilization(per_device * num_devices, steps_per_s, num_devices, device)
  -> {"tflops_per_s_per_device": ..., "mfu": ...}   # no "mfu" off the table

What is counted: XLA's cost analysis of the compiled program, i.e. every
floating-point operation XLA sees, not only the model's matmuls: norms,
softmax, activations, the loss, the optimizer and EMA updates, the
K-amplitude transform, and the forward recomputed under `remat`. For a
DiT at practical widths the matmuls are > 99 % of it (tests/flops_test.py),
so the ratio to the peak is the usual MFU there; with remat it is closer to
a hardware utilisation. Custom calls (cuDNN fused attention, Pallas
kernels) are invisible to the cost analysis and count 0.
"""
import re
from typing import Optional

from absl import logging

# Dense (no sparsity) bf16 peak TFLOP/s per chip, from the vendors' data
# sheets. Keys are the chip names `chip()` returns.
PEAK_TFLOPS = {
    "TPU v4": 275.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v6e": 918.0,
    "A100": 312.0,
    "H100": 989.0,        # SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "GH200": 989.0,       # its GPU is an H100 SXM
    "H200": 989.0,        # SXM
    "H200 NVL": 835.0,
}

# (regex on the lower-case device_kind, chip); the first match wins, so
# the specific variants come before the family name. TPUs report exact
# kinds ("TPU v5 lite" is a v5e, a v5p says just "TPU v5"; "TPU v4 lite",
# the inference chip, is not a v4); GPUs add memory and form factor to
# the name ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3").
_KINDS = (
    (r"^tpu v4$", "TPU v4"),
    (r"^tpu v5( lite|e)$", "TPU v5e"),
    (r"^tpu v5p?$", "TPU v5p"),
    (r"^tpu v6( lite|e)$", "TPU v6e"),
    (r"\ba100\b", "A100"),
    (r"\bgh200\b", "GH200"),
    (r"\bh100\b.*\bpcie\b", "H100 PCIe"),
    (r"\bh100\b.*\bnvl\b", "H100 NVL"),
    (r"\bh100\b", "H100"),
    (r"\bh200\b.*\bnvl\b", "H200 NVL"),
    (r"\bh200\b", "H200"),
)


def chip(device) -> Optional[str]:
  """The PEAK_TFLOPS name of a jax device (or a device_kind string)."""
  kind = str(getattr(device, "device_kind", device)).strip().lower()
  for pattern, name in _KINDS:
    if re.search(pattern, kind):
      return name
  return None


def peak_tflops(device) -> Optional[float]:
  """Dense bf16 peak TFLOP/s of the device's chip; None when unknown (the
  CPU, chips not in PEAK_TFLOPS)."""
  name = chip(device)
  return None if name is None else PEAK_TFLOPS[name]


def step_flops(stage) -> Optional[float]:
  """XLA's FLOP count of one call of a jax stage; None if unavailable.

  Pass the `Compiled` (`jitted.lower(*args).compile()`): its count is of
  the program after SPMD partitioning, which every device runs on its own
  shard, so for a jit sharded over N devices it is ONE device's FLOPs
  (multiply by N for the whole step). A `Lowered` is counted before
  partitioning and optimisation: the global program outside shard_map
  but one shard inside it, so it matches neither on more than one device.
  """
  try:
    cost = stage.cost_analysis()
  except Exception as e:  # pylint: disable=broad-except
    # NotImplementedError or a runtime error, depending on the backend.
    logging.info("XLA cost analysis unavailable: %s", e)
    return None
  # Older jax returned a list with one dict per compiled module; a jit
  # compiles one SPMD module, so the first entry is the program.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not isinstance(cost, dict):
    return None
  value = cost.get("flops")
  # XLA writes a negative count when it could not analyse the program.
  if value is None or not float(value) > 0:
    return None
  return float(value)


def utilization(flops_per_step: float, steps_per_s: float,
                num_devices: int, device=None) -> dict:
  """{"tflops_per_s_per_device", and "mfu" when the device's peak is known}.

  flops_per_step: of the whole step over all devices (per-device
  `step_flops` x num_devices), so it is comparable across device counts.
  """
  tflops = float(flops_per_step) * float(steps_per_s) / int(num_devices) / 1e12
  out = {"tflops_per_s_per_device": tflops}
  peak = None if device is None else peak_tflops(device)
  if peak:
    out["mfu"] = tflops / peak
  return out
