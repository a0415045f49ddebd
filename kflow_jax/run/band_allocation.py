"""The per-band sub-batches a scale-adaptive run's measured errors call
for (the rule: flow/adaptive_loss.allocation_shares; docs/method.md,
"Allocation from the measured errors"). The command line is
kflow_jax/tools/band_allocation.py."""
import json
import os

import numpy as np


def measured_rms(workdir: str, rows: int) -> tuple:
  """(steps, rms [S]) from the last `rows` rows of metrics.jsonl that hold
  band_loss_rms: the root of the mean over rows of their squares."""
  if rows < 1:
    raise ValueError(f"--rows must be >= 1, got {rows}.")
  f = os.path.join(workdir, "metrics.jsonl")
  found = []
  if os.path.exists(f):
    with open(f) as fh:
      for line in fh:
        rec = json.loads(line)
        if isinstance(rec.get("band_loss_rms"), list):
          found.append(rec)
  if not found:
    raise ValueError(
        f"no band_loss_rms in {f}: train the run first (a pilot of a few "
        "hundred steps is enough; runs trained before this metric existed "
        "do not log it).")
  found = found[-rows:]
  vals = np.asarray([[np.nan if v is None else v for v in r["band_loss_rms"]]
                     for r in found], np.float64)
  return [r["step"] for r in found], np.sqrt(np.mean(np.square(vals), 0))


def allocation(run, workdir: str, rows: int, batch_size: int) -> dict:
  """The split for `run` (experiment.setup's) from its measured errors."""
  # pylint: disable=g-import-not-at-top
  from kflow_jax.flow import adaptive_loss
  from kflow_jax.run import field as field_lib
  # pylint: enable=g-import-not-at-top
  plan = run.field.plan
  if plan is None:
    raise ValueError(
        "band_allocation splits the batch of a scale-adaptive run, and this "
        "one trains at full resolution: add "
        "--config.model.scale_adaptive=True (as the run was trained).")
  opts = field_lib.read_loss_options(run.config, run.path, True)
  shares = adaptive_loss.band_shares(run.path, opts.t_sampling,
                                     **opts.t_options)
  steps, rms = measured_rms(workdir, rows)
  if rms.size != shares.size:
    raise ValueError(
        f"{workdir}/metrics.jsonl logs {rms.size} bands and the config has "
        f"{shares.size}: give the config the run was trained with.")
  costs = np.asarray(plan.pixel_ratio, np.float64)
  new = adaptive_loss.allocation_shares(shares, rms, costs)
  sizes = adaptive_loss.batch_sizes(new, batch_size)
  own = adaptive_loss.batch_sizes(shares, batch_size,
                                  opts.band_batch_sizes)
  cost = lambda n: float(np.dot(costs, n))
  return {"workdir": workdir, "measured_steps": steps,
          "band_loss_rms": rms.tolist(), "band_shares_of_t": shares.tolist(),
          "pixel_ratio": costs.tolist(), "allocation_shares": new.tolist(),
          "batch_size": batch_size, "band_batch_sizes": list(sizes),
          "own_band_batch_sizes": list(own),
          "step_cost_vs_own": cost(sizes) / cost(own),
          "flag": "--config.loss.band_batch_sizes=(" +
                  ",".join(str(n) for n in sizes) + ")"}
