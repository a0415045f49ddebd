"""The "cheap" metrics of a sample set: no downloaded weights, CPU friendly.

    metrics = cheap.cheap_metrics(samples, reference, dataset="digits",
                                  labels=requested, classifier=clf,
                                  cutoffs=config.kflow.cutoffs)

One flat dict of floats (ready for metrics_io), the keys present depending
on what is given:

  spectrum_error          mean |log power ratio| over all radial bins
  spectrum_error_fine     ... over the finest third (kappa >= 2/3)
  spectrum_error_band{s}  ... over band s of `cutoffs` (when given; NaN for
                          a band narrower than one radial bin)
  sliced_w2               pixel-space sliced Wasserstein-2
  random_fd               Frechet distance on fixed random conv features
                          (label-free; any data set)
  classifier_fd           Frechet distance on the classifier's penultimate
                          features (when a classifier is given)
  class_accuracy          fraction of samples the classifier puts in their
                          requested class (when labels are given)
"""
from typing import Optional, Sequence, Union

import jax

from kflow_jax.evaluators import classifier as classifier_lib
from kflow_jax.evaluators import random_features
from kflow_jax.evaluators import sliced
from kflow_jax.evaluators import spectrum
from kflow_jax.evaluators import validate

# Fixed default key for the sliced Wasserstein directions: every eval of
# every run then projects on the same directions, so the numbers compare.
DEFAULT_SLICED_SEED = 0


def _resolve_classifier(clf, dataset, image_shape):
  if clf is None or isinstance(clf, classifier_lib.Classifier):
    if clf is not None and (clf.dataset != dataset or
                            tuple(clf.image_shape) != tuple(image_shape)):
      raise ValueError(
          f"the classifier is for {clf.dataset!r} images "
          f"{tuple(clf.image_shape)} but the samples are {dataset!r} images "
          f"{tuple(image_shape)}; train a matching one with: "
          f"{classifier_lib.tool_command(dataset, 'PATH.npz')} "
          f"--image_size={image_shape[0]}")
    return clf
  return classifier_lib.load(str(clf), dataset=dataset,
                             image_shape=image_shape)


def cheap_metrics(samples, reference, *, dataset: str, labels=None,
                  classifier: Union[None, str,
                                    classifier_lib.Classifier] = None,
                  cutoffs: Optional[Sequence[float]] = None,
                  rng=None, num_projections: int = 256,
                  feature_seed: int = 0) -> dict:
  """The cheap metric dict of samples against reference images.

  Args:
    samples: float [N, H, W, C] in [-1, 1], N >= 2.
    reference: float [M, H, W, C] in [-1, 1] (e.g. the eval split, via
      `reference.load_split`), M >= 2.
    dataset: config.input.name; a classifier must have been trained on it.
    labels: int [N], the class each sample was asked to be (conditional
      sampling); needs a classifier.
    classifier: a `classifier.Classifier`, or the path of its .npz (loaded
      and checked against dataset and image shape); None: no classifier
      metrics.
    cutoffs: band edges in kappa units (config.kflow cutoffs) for the
      per-band spectrum error; None: no per-band keys.
    rng: jax PRNG key of the sliced-Wasserstein directions; None: the fixed
      key jax.random.key(DEFAULT_SLICED_SEED).
    num_projections: number of sliced-Wasserstein directions.
    feature_seed: seed of the random feature net of random_fd.

  Returns:
    {name: float}, see the module docstring.
  """
  a = validate.images(samples, "samples", min_count=2)
  b = validate.images(reference, "reference", min_count=2)
  validate.same_image_shape(a, b)
  clf = _resolve_classifier(classifier, dataset, a.shape[1:])
  if labels is not None and clf is None:
    raise ValueError(
        "class_accuracy needs a classifier: pass classifier=PATH.npz, "
        "written by "
        f"{classifier_lib.tool_command(dataset, 'PATH.npz')}, or labels=None.")
  if rng is None:
    rng = jax.random.key(DEFAULT_SLICED_SEED)

  err = spectrum.spectrum_error(a, b, cutoffs)
  out = {"spectrum_error": err.mean, "spectrum_error_fine": err.fine}
  if cutoffs is not None:
    out.update({f"spectrum_error_band{s}": float(v)
                for s, v in enumerate(err.bands)})
  out["sliced_w2"] = sliced.sliced_wasserstein(
      a, b, rng, num_projections=num_projections, p=2.0)
  out["random_fd"] = random_features.frechet_distance(a, b, seed=feature_seed)
  if clf is not None:
    out["classifier_fd"] = classifier_lib.frechet_distance(clf, a, b)
    if labels is not None:
      out["class_accuracy"] = classifier_lib.class_accuracy(clf, a, labels)
  return out
