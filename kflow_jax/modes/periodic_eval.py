"""Evaluation during training: cheap metrics every config.evals.every_steps.

    evals = periodic_eval.PeriodicEval(run, writer)   # before the loop
    evals.after_step(step, state)                     # after logging

At every multiple of evals.every_steps (0: off) the inference params
(experiment.inference_params: the EMA by default) generate
evals.train_num_samples samples with the run's sampler (sample_set's chunk
function: the seed-determined noise and labels of --mode=sample, sharded
over every device), scored with evaluators/cheap.py against the reference
split (classifier metrics when a classifier is configured or found, see
evaluate.find_classifier). The metrics go to metrics.jsonl and TensorBoard
as eval_<name>; with evals.plots, spectrum.png (radial power of data and
samples, band cut-offs marked) and band_loss.png (per-band training loss
from metrics.jsonl) are rewritten in the workdir.
"""
import json
import os

from absl import logging
import jax
import numpy as np

from kflow_jax.evaluators import evaluate
from kflow_jax.run import experiment
from kflow_jax.generate import sample_set
from kflow_jax.infra import metrics_io
from kflow_jax.evaluators import plots
from kflow_jax.generate import files as samples_lib
from kflow_jax.evaluators import sharded_features
from kflow_jax.evaluators import spectrum

SPECTRUM_PNG = "spectrum.png"
BAND_LOSS_PNG = "band_loss.png"


def generate_samples(run, params, num: int):
  """(uint8 images [num, H, W, C], labels [num]) of the first `num` global
  sample indices of the run's spec (the same as --mode=sample's set)."""
  fn, chunk = sample_set.make_chunk_fn(run)
  images, labels = [], []
  for start in range(0, num, chunk):
    x, y, _ = fn(params, np.int32(start))
    images.append(samples_lib.to_uint8(sharded_features.host_array(x)))
    labels.append(sharded_features.host_array(y))
  return np.concatenate(images)[:num], np.concatenate(labels)[:num]


def read_band_loss(workdir: str):
  """(steps, band losses [n, S]) logged in metrics.jsonl."""
  f = os.path.join(workdir, metrics_io.METRICS_FILE)
  steps, rows = [], []
  if os.path.exists(f):
    with open(f) as fh:
      for line in fh:
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:
          continue
        if isinstance(rec.get("band_loss"), list):
          steps.append(rec["step"])
          rows.append([np.nan if v is None else v for v in rec["band_loss"]])
  return np.asarray(steps, np.float64), np.asarray(rows, np.float64)


def spectrum_plot(reference_uint8, samples_uint8, cutoffs, step: int):
  """Radial power of data and samples against kappa (log-log)."""
  ref = evaluate.to_float(reference_uint8)
  smp = evaluate.to_float(samples_uint8)
  kappa = spectrum.radial_bins(*ref.shape[1:3]).kappa
  return plots.line_plot(
      [("data", kappa, spectrum.power_spectrum(ref)),
       ("samples", kappa, spectrum.power_spectrum(smp))],
      title=f"radial power spectrum, step {step} (dashed: band cut-offs)",
      xlabel="kappa (radial frequency / max)", log_x=True, log_y=True,
      vlines=[c for c in cutoffs[1:-1]])


def band_loss_plot(workdir: str):
  steps, rows = read_band_loss(workdir)
  series = [] if not len(rows) else [
      (f"band {s}", steps, rows[:, s]) for s in range(rows.shape[1])]
  return plots.line_plot(series, title="training loss per band",
                         xlabel="step", log_y=True)


class PeriodicEval:
  """The in-training evaluation hook (see the module docstring)."""

  def __init__(self, run, writer):
    self.run, self.writer = run, writer
    # config.evals read once, through its one reader.
    self.spec = evaluate.evals_spec(run.config)
    self.every = self.spec.every_steps
    self._ready = False

  def _prepare(self):
    # Built at the first evaluation, so runs with the hook off pay nothing.
    run = self.run
    self.reference, _ = evaluate.reference_images(run.config)
    self.classifier = evaluate.find_classifier(run)
    self.num = self.spec.train_num_samples
    self._ready = True

  def due(self, step: int) -> bool:
    return self.every > 0 and step > 0 and step % self.every == 0

  def after_step(self, step: int, state) -> dict:
    """Evaluates at multiples of every_steps; returns the metrics ({}
    otherwise)."""
    if not self.due(step):
      return {}
    if not self._ready:
      self._prepare()
    run = self.run
    params = experiment.inference_params(run, state)
    images, labels = generate_samples(run, params, self.num)
    scores = evaluate.cheap_scores(run, images, self.reference,
                                   labels=labels, classifier=self.classifier)
    metrics = {f"eval_{k}": v for k, v in scores.items()}
    self.writer.write(step, metrics)
    logging.info("Eval at step %d on %d samples: %s", step, self.num,
                 ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    if self.spec.plots and jax.process_index() == 0:
      spec_img = spectrum_plot(self.reference, images, run.path.cutoffs,
                               step)
      plots.save_png(os.path.join(run.workdir, SPECTRUM_PNG), spec_img)
      self.writer.flush()
      loss_img = band_loss_plot(run.workdir)
      plots.save_png(os.path.join(run.workdir, BAND_LOSS_PNG), loss_img)
      self.writer.write_image(step, "eval_spectrum", spec_img)
      self.writer.write_image(step, "band_loss", loss_img)
    return metrics
