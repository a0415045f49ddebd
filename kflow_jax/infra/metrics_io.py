"""Where training metrics go: metrics.jsonl, TensorBoard, a progress line.

Only process 0 writes. On resume from step k, lines of metrics.jsonl with a
step > k (written after the checkpoint the run resumes from, so about to be
recomputed) are dropped, and TensorBoard events after k are purged, so each
step appears once.
"""
import json
import math
import os
import time
from typing import Optional

from absl import logging
import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


def _number(e):
  # Strict JSON has no NaN: a band no example fell into is null.
  e = float(e)
  return e if math.isfinite(e) else None


def _scalar(v):
  """A 0-d value -> float; any array (a per-band vector, even of one band)
  -> list, so a metric keeps its kind whatever the number of bands."""
  v = np.asarray(v)
  return _number(v) if v.ndim == 0 else [_number(e) for e in v.reshape(-1)]


class MetricWriter:
  """JSON lines + tensorboardX on process 0; no-op elsewhere."""

  def __init__(self, workdir: str, resume_step: Optional[int] = None):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not self.active:
      return
    if resume_step is not None and os.path.exists(self.path):
      self._truncate(resume_step)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(
        logdir=os.path.join(workdir, "tensorboard"),
        purge_step=None if resume_step is None else resume_step + 1,
        flush_secs=30)

  def _truncate(self, step: int):
    with open(self.path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a kill
      if rec.get("step", 0) <= step:
        keep.append(json.dumps(rec) + "\n")
    if len(keep) != len(lines):
      logging.info("Resuming at step %d: dropping %d metric lines written "
                   "after that checkpoint.", step, len(lines) - len(keep))
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict):
    """metrics: name -> scalar or 1-D array (written as name/i)."""
    if not self.active:
      return
    rec = {"step": int(step)}
    rec.update({k: _scalar(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    for k, v in rec.items():
      if k == "step":
        continue
      if isinstance(v, list):
        for i, e in enumerate(v):
          if e is not None:
            self._tb.add_scalar(f"{k}/{i}", e, step)
      elif v is not None:
        self._tb.add_scalar(k, v, step)

  def write_image(self, step: int, name: str, image_uint8: np.ndarray):
    if self.active:
      self._tb.add_image(name, image_uint8, step, dataformats="HWC")

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None


class Progress:
  """Rate and ETA for the log line (the progress bar of a batch job)."""

  def __init__(self, start_step: int, total_steps: int):
    self.total = int(total_steps)
    self.t0 = time.perf_counter()
    self.last_t, self.last_step = self.t0, int(start_step)

  def update(self, step: int) -> dict:
    """Seconds per step and steps/s since the last call, and the ETA."""
    now = time.perf_counter()
    n = max(step - self.last_step, 1)
    dt = max(now - self.last_t, 1e-9)
    self.last_t, self.last_step = now, step
    rate = n / dt
    eta = (self.total - step) / rate
    return {"step_time_s": dt / n, "steps_per_s": rate, "eta_s": eta}

  def line(self, step: int, loss: float, timing: dict,
           extra: Optional[dict] = None) -> str:
    """extra: the logged summary; its tflops_per_s_per_device and mfu
    (when present) join the line."""
    frac = step / max(self.total, 1)
    bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
    eta = int(timing["eta_s"])
    rate = f"{timing['steps_per_s']:.2f} steps/s"
    extra = extra or {}
    if "tflops_per_s_per_device" in extra:
      # 4 significant digits: CPU runs reach thousandths of a TFLOP/s.
      rate += f" | {extra['tflops_per_s_per_device']:.4g} TFLOP/s/device"
    if "mfu" in extra:
      rate += f" | MFU {100 * extra['mfu']:.1f}%"
    return (f"[{bar}] step {step}/{self.total} ({100 * frac:.1f}%) "
            f"loss {loss:.4f} | {rate} | "
            f"ETA {eta // 3600}h{eta % 3600 // 60:02d}m{eta % 60:02d}s")


def jsonable(v):
  """numpy scalars and arrays -> lists and floats; strict JSON has no NaN
  or infinity, so those become null."""
  if isinstance(v, dict):
    return {k: jsonable(e) for k, e in v.items()}
  if isinstance(v, (list, tuple)):
    return [jsonable(e) for e in v]
  if isinstance(v, (np.ndarray, np.generic)):
    return jsonable(np.asarray(v).tolist())
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def write_json(path: str, obj, *, every_process: bool = False) -> None:
  """The one JSON writer for run artefacts (path.json, samples.json,
  eval.json, cdr.json, ...): atomic (a reader sees the old file or the new
  one, never half of one, even if the run is killed mid-write) and, unless
  `every_process`, written by process 0 only, since all processes hold the
  same object and share the workdir."""
  if not every_process and jax.process_index() != 0:
    return
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(jsonable(obj), f, indent=2)
  os.replace(tmp, path)
