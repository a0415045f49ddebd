"""Trains the metric classifier of a labelled data set and writes its .npz.

  python -m kflow_jax.tools.train_classifier --dataset=digits \
      --out=/tmp/digits_classifier.npz [--steps=1000] [--image_size=16]

Trains `evaluators.classifier.CNN` on the train split (AdamW, cosine
decay, one-pixel random shifts), scores the held-out split and stores the
weights with the metadata `classifier.load` checks (data set, image shape,
classes, architecture) and the held-out accuracy. Deterministic: the same
flags give the same file. The classifier supplies `classifier_fd` and
`class_accuracy` of `evaluators.cheap.cheap_metrics`.
"""
from absl import app
from absl import flags
from absl import logging

from kflow_jax.evaluators import classifier


def _define_flags():
  """Flags exist only when run as a tool, so importing this module never
  clashes with the trainer's flags."""
  flags.DEFINE_string("dataset", "digits",
                      "config.input.name of a labelled data set.")
  flags.DEFINE_string("out", None, "Output .npz path.")
  flags.DEFINE_integer("image_size", None,
                       "config.input.image_size; default: the data set's.")
  flags.DEFINE_integer("steps", 1000, "Training steps.")
  flags.DEFINE_integer("batch_size", 64, "Training batch size.")
  flags.DEFINE_float("learning_rate", 2e-3, "Peak AdamW learning rate.")
  flags.DEFINE_integer("seed", 0, "Seed of init, batches and shifts.")
  flags.mark_flags_as_required(["out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  f = flags.FLAGS
  clf = classifier.fit(f.dataset, image_size=f.image_size, steps=f.steps,
                       seed=f.seed, batch_size=f.batch_size,
                       learning_rate=f.learning_rate)
  classifier.save(f.out, clf)
  logging.info("classifier %s: %s %s, %d classes, held-out accuracy %.4f",
               f.out, clf.dataset, clf.image_shape, clf.num_classes,
               clf.accuracy)
  print(f"wrote {f.out}: {clf.dataset} images {clf.image_shape}, "
        f"{clf.num_classes} classes, feature dim {clf.feature_dim}, "
        f"held-out accuracy {clf.accuracy:.4f} after {clf.steps} steps")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
