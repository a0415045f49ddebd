r"""Per-band sub-batches of a scale-adaptive run, from its measured errors.

  python -m kflow_jax.tools.band_allocation \
      --config=configs/mnist.py:cond,transform=wavelet,bands=3 \
      --config.model.scale_adaptive=True --workdir=/tmp/pilot [--rows=4] \
      [--batch_size=N]

Reads the root mean square of each band's per-example training errors
(`band_loss_rms`, logged by training) over the last `--rows` rows of
<workdir>/metrics.jsonl, and returns the split of the batch that makes the
stratified loss least noisy for what a step costs
(`adaptive_loss.allocation_shares`: B_s ~ p_s rms_s / sqrt(c_s), p_s the
band's share of t under the run's t sampling, c_s its grid's share of the
full grid's pixels), rounded as the run rounds
(`adaptive_loss.batch_sizes`). Prints a table and the flag to train with
(`--config.loss.band_batch_sizes=(...)`), and writes
<workdir>/band_allocation.json: the measurement that chose it (steps,
rms, shares, costs), the split, and a step's cost against the run's own
split (sum of c_s B_s). The loss stays unbiased with any split; only its
noise per unit of compute moves.
"""
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "The trained (pilot) run's workdir.")
_ROWS = flags.DEFINE_integer("rows", 4,
                             "Log rows (the last ones) the errors are read "
                             "from.")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              "Batch to split (default config.batch_size).")


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  # pylint: disable=g-import-not-at-top
  from kflow_jax.run import experiment
  # pylint: enable=g-import-not-at-top
  try:
    run = experiment.setup(_CONFIG.value, _WORKDIR.value, "eval")
    out = allocation(run, _WORKDIR.value, _ROWS.value,
                     int(_BATCH.value or _CONFIG.value.batch_size))
  except (ValueError, FileNotFoundError) as e:
    print(f"\nkflow_jax: error: {e}", file=sys.stderr)
    sys.exit(1)
  with open(os.path.join(_WORKDIR.value, "band_allocation.json"), "w") as f:
    json.dump(out, f, indent=1)
  print("band  share of t  rms error  pixels  examples (own)")
  for s, (p, r, c, n, o) in enumerate(zip(
      out["band_shares_of_t"], out["band_loss_rms"], out["pixel_ratio"],
      out["band_batch_sizes"], out["own_band_batch_sizes"])):
    print(f"{s:4d}  {p:10.4f}  {r:9.4g}  {c:6.4f}  {n:4d} ({o})")
  print(f"a step costs {out['step_cost_vs_own']:.2f}x the run's own split; "
        f"measured at steps {out['measured_steps']}")
  print(out["flag"])


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
