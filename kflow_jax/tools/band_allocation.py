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

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "The trained (pilot) run's workdir.")
_ROWS = flags.DEFINE_integer("rows", 4,
                             "Log rows (the last ones) the errors are read "
                             "from.")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              "Batch to split (default config.batch_size).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  # pylint: disable=g-import-not-at-top
  from kflow_jax.run import band_allocation
  from kflow_jax.run import experiment
  # pylint: enable=g-import-not-at-top
  try:
    run = experiment.setup(_CONFIG.value, _WORKDIR.value, "eval")
    out = band_allocation.allocation(
        run, _WORKDIR.value, _ROWS.value,
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
