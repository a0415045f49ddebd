r"""The class-drop ratio of a trained class-conditional run.

  python -m kflow_jax.tools.class_drop_ratio \
      --config=configs/digits.py:cond --workdir=/tmp/digits_cfg \
      --fraction=0.3 [--metric=class_accuracy|classifier_fd|random_fd|fid] \
      [--config.evals.classifier=/tmp/digits_classifier.npz] \
      [--config.evals.inception_weights=pt_inception-2015-12-05-6726825d.pth] \
      [--config.evals.fid_reference=ref.npz] \
      [--config.sample.num_samples=1000]

Samples the newest checkpoint twice (label kept, label dropped after
t = fraction; see kflow_jax/evaluators/class_drop.py for which time and why), scores
both and writes <workdir>/cdr.json: both metrics, their ratio, the class
accuracy of the dropped samples, band times and each band's flowed share
at the drop. The sample sets stay under sample_mode/ (a relaunch reuses
them).

--metric=fid is the paper's ratio, Inception FID with the label dropped
over FID with it kept, when Inception weights are found
(--config.evals.inception_weights, $KFLOW_INCEPTION_WEIGHTS or
~/.cache/kflow_jax/pt_inception-2015-12-05-6726825d.pth); without them
the classifier FD, and cdr.json's "metric" says which ("inception_fid" or
"classifier_fd").
"""
import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_FRACTION = flags.DEFINE_float("fraction", 0.3,
                               "Drop the label from t = fraction on.")
_METRIC = flags.DEFINE_enum(
    "metric", "class_accuracy",
    ["class_accuracy", "classifier_fd", "random_fd", "fid"],
    "Metric of the ratio (fid: Inception FID when weights are found, else "
    "the classifier FD; cdr.json's metric names which).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import class_drop
  from kflow_jax.run import experiment
  # pylint: enable=g-import-not-at-top
  try:
    run = experiment.setup(_CONFIG.value, _WORKDIR.value, "eval")
    step, state, _ = experiment.restore(run)
    out = class_drop.class_drop_ratio(
        run, experiment.inference_params(run, state), step,
        _FRACTION.value, _METRIC.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"\nkflow_jax: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps({k: out[k] for k in (
      "checkpoint_step", "fraction", "metric", "metric_requested",
      "metric_full", "metric_drop",
      "ratio", "class_accuracy_drop", "tau",
      "band_flowed_share_at_drop")}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
