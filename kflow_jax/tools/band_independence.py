r"""Band independence of a trained full-resolution K-Flow run.

  python -m kflow_jax.tools.band_independence \
      --config=configs/digits.py:transform=wavelet --workdir=/tmp/digits_w \
      [--step=N] [--num_examples=256] [--split=eval] [--seed=0] \
      [--config.sample.use_ema=false]

For each band s below the last: held-out images x1, noise x0, t uniform in
band s's window, x_t on the run's path; the model's velocity on x_t and on
x_t with the finer bands replaced by (a) a fresh noise draw, (b) zeros.
Writes <workdir>/band_independence.json (checkpoint step, counts, per band
the mean squared change of the band-s output, the training error on band
s, their ratios, the change on the finer bands) and prints a table; see
kflow_jax/evaluators/band_independence.py. The params are those sampling uses (the
EMA unless config.sample.use_ema=false). Needs at least two bands, an
orthonormal transform (fourier, dct, orthogonal wavelet) and
config.path.overlap=0.
"""
import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_STEP = flags.DEFINE_integer("step", None,
                             "Checkpoint step (default: the newest).")
_NUM = flags.DEFINE_integer("num_examples", 256,
                            "Examples per band (fewer if the split is "
                            "smaller).")
_SPLIT = flags.DEFINE_string("split", "eval",
                             "Data split of x1: eval (held out) or train.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of x0, the fresh noise and t.")
_BATCH = flags.DEFINE_integer("batch_size", None,
                              "Examples per network call (x3 inputs); "
                              "default config.batch_size.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import band_independence
  from kflow_jax.infra import checkpointing
  from kflow_jax.run import experiment
  # pylint: enable=g-import-not-at-top
  try:
    run = experiment.setup(_CONFIG.value, _WORKDIR.value, "eval")
    # Before restoring anything: the claim is not made for this run.
    band_independence.check_run(run.path, run.field.plan is not None,
                                run.field.band_io.hide_input)
    step, state, _ = experiment.restore(run, step=_STEP.value)
    spec = run.spec
    name = (f"ema {spec.ema_decay or run.ema_decays[0]}" if spec.use_ema
            else "raw")
    out = band_independence.run_tool(
        run, experiment.inference_params(run, state), step,
        num_examples=_NUM.value, split=_SPLIT.value, seed=_SEED.value,
        batch_size=_BATCH.value, params_name=name)
  except (ValueError, FileNotFoundError, checkpointing.WorkdirError) as e:
    print(f"\nkflow_jax: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(band_independence.table(out))
  print(json.dumps({k: out[k] for k in ("checkpoint_step", "num_examples",
                                        "below_error")}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
