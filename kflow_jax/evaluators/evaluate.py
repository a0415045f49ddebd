"""--mode=eval: scores a checkpoint and writes eval.json.

    python -m kflow_jax.main --config=configs/digits.py --workdir=DIR \
        --mode=eval [--config.evals.metrics=loss,cheap,fid]

Metrics (config.evals.metrics, any of):

  loss   the K-Flow loss on the eval split (`eval_loss`): the inference
         params (EMA by default, see experiment.inference_params) with a
         fixed rng, so numbers compare between checkpoints; per-band
         losses from per-band sums and counts over the whole split.
  cheap  download-free metrics of a sample set against the reference
         split (evaluators/cheap.py): spectrum error overall, in the finest
         third and per band of the run's cut-offs, sliced W2, random-feature
         FD, and with a digits-style classifier (evals.classifier, or one
         found at <workdir>/classifier.npz or
         ~/.cache/kflow_jax/classifier_<dataset>_<H>x<W>.npz) classifier FD
         and class accuracy of conditional samples.
  fid    FID, sFID, Inception Score and precision/recall (evaluators/fid.py)
         with pytorch-fid's Inception weights (evals.inception_weights) and
         a reference file (evals.fid_reference: tools/fid_reference or an
         ADM VIRTUAL_*.npz), protocol pytorch_fid or adm; features sharded
         over every device, statistics float64 on the host.

The sample set is evals.samples (a directory written by --mode=sample) or,
by default, generated with generate.sample_set.sample from config.sample
(chunked, sharded, resumable: a relaunch reuses the finished chunks).
eval.json (in the workdir, and a copy in the sample set's directory) holds
every metric, the checkpoint step, the sample and reference counts, the
reference and weights files with their sha256, and the sampler provenance
copied from the set's samples.json (solver, NFE, guidance, steering).
config.evals is read through evals_spec (evaluators/config.parse_evals).
"""
import json
import os
from typing import Optional

from absl import logging
import jax
import numpy as np

from kflow_jax.generate import sample_set as sample_set_lib
from kflow_jax.generate import sampler as sampler_lib
from kflow_jax.data import input_pipeline
from kflow_jax import kamp
from kflow_jax.infra import metrics_io
from kflow_jax.infra import sharding
from kflow_jax.evaluators import cheap
from kflow_jax.evaluators import config as evals_config
from kflow_jax.evaluators import fid
from kflow_jax.evaluators import preprocess
from kflow_jax.generate import files as samples_lib
from kflow_jax.evaluators import sharded_features

METRICS = evals_config.METRICS
EVAL_FILE = "eval.json"
CLASSIFIER_FILE = "classifier.npz"


def evals_spec(config) -> evals_config.EvalSpec:
  """config.evals as its checked EvalSpec (evaluators/config.py)."""
  return evals_config.parse_evals(config.evals)


def sample_quantization(config) -> str:
  """How the run's sample sets quantise: as the FID protocol's pipeline
  does (config.evals.protocol "adm": truncated like ADM's sampler)."""
  return preprocess.QUANTIZATION[evals_spec(config).protocol]


def to_float(images_uint8) -> np.ndarray:
  """uint8 images -> float32 in [-1, 1] (the data convention)."""
  return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def reference_images(config, split: Optional[str] = None,
                     num: Optional[int] = None):
  """(uint8 images [N, H, W, C], labels [N]) of the reference split
  (default config.evals.reference_split, first config.evals.num_reference
  examples), read once in order through the input pipeline (latents
  decoded to pixels), quantised like the samples so both sides of every
  metric are uint8."""
  ev = evals_spec(config)
  split = split or ev.reference_split
  num = (ev.num_reference or 0) if num is None else int(num)
  decoder = input_pipeline.latent_decoder(config.input)
  it = input_pipeline.create(config.input, global_batch_size=256,
                             seed=int(config.seed), process_index=0,
                             process_count=1, split=split, finite=True)
  images, labels, count = [], [], 0
  for batch in it:
    keep = np.asarray(batch["mask"], bool)
    x = np.asarray(batch["image"])[keep]
    if decoder is not None:
      x = sampler_lib.decode(decoder, x)
    images.append(samples_lib.to_uint8(x))
    labels.append(np.asarray(batch["label"], np.int32)[keep])
    count += int(keep.sum())
    if num > 0 and count >= num:
      break
  images, labels = np.concatenate(images), np.concatenate(labels)
  if num > 0:
    images, labels = images[:num], labels[:num]
  return images, labels


def default_classifier_paths(run) -> list:
  """Where a classifier is looked for when evals.classifier is empty."""
  h, w = run.info.shape[:2]
  name = f"classifier_{run.config.input.name}_{h}x{w}.npz"
  paths = [os.path.expanduser(os.path.join("~", ".cache", "kflow_jax",
                                           name))]
  if run.workdir:
    paths.insert(0, os.path.join(run.workdir, CLASSIFIER_FILE))
  return paths


def find_classifier(run, required: bool = False) -> Optional[str]:
  """evals.classifier (must exist), else the first default path found;
  None when there is none (or a ValueError with the command that trains
  one, when `required`)."""
  given = evals_spec(run.config).classifier
  if given:
    if not os.path.isfile(os.path.expanduser(given)):
      raise ValueError(
          f"config.evals.classifier={given!r} does not exist; train it with "
          "python -m kflow_jax.tools.train_classifier --dataset="
          f"{run.config.input.name} --out={given}")
    return os.path.expanduser(given)
  for p in default_classifier_paths(run):
    if os.path.isfile(p):
      return p
  if required:
    raise ValueError(
        "this metric needs a classifier of the data set: train one with "
        "python -m kflow_jax.tools.train_classifier --dataset="
        f"{run.config.input.name} --out=PATH.npz and pass "
        "--config.evals.classifier=PATH.npz (or put it at "
        f"{default_classifier_paths(run)[0]}).")
  return None


def cheap_scores(run, images_uint8, reference_uint8, labels=None,
                 classifier: Optional[str] = None) -> dict:
  """evaluators.cheap metrics of uint8 samples against a uint8 reference
  with the run's band cut-offs; class accuracy for conditional runs (of
  the coarse slot's label for sets with a label per slot [N, K]; none when
  it is null somewhere: evaluators/hybrid.py scores each band's label)."""
  if labels is not None and np.ndim(labels) == 2:
    labels = np.asarray(labels)[:, 0]
    labels = None if np.any(labels < 0) else labels
  return cheap.cheap_metrics(
      to_float(images_uint8), to_float(reference_uint8),
      dataset=str(run.config.input.name),
      labels=labels if (run.num_classes and classifier) else None,
      classifier=classifier, cutoffs=tuple(run.path.cutoffs))


def fid_scores(run, images_uint8) -> tuple:
  """({fid, sfid, inception_score[, precision, recall]}, record) of uint8
  samples against config.evals.fid_reference; record names the weights,
  the reference and their sha256."""
  ev = evals_spec(run.config)
  if not ev.fid_reference:
    raise ValueError(
        "the fid metrics need a reference: build one with python -m "
        "kflow_jax.tools.fid_reference --config=<this config> --out=ref.npz "
        "(or use an ADM VIRTUAL_*.npz) and pass "
        "--config.evals.fid_reference=ref.npz.")
  ref_path = os.path.expanduser(ev.fid_reference)
  variables, wpath = sharded_features.load_weights(
      ev.inception_weights, ev.check_weights_hash)
  wsha = sharded_features.sha256(wpath)
  meta = sharded_features.check_reference(ref_path, ev.protocol, wsha)
  with np.load(ref_path, allow_pickle=False) as npz:
    has_images = "arr_0" in npz.files
  ref = fid.load_reference(ref_path, load_images=has_images)
  fn, bs = sharded_features.feature_fn(variables, ev.protocol,
                                       run.mesh, ev.feature_batch_size)
  feats = fid.extract_features(fn, images_uint8, batch_size=bs)
  ref_pool = None
  if has_images:
    ref_pool = fid.extract_features(fn, ref.images, batch_size=bs)["pool"]
  else:
    logging.warning("%s holds no reference images (arr_0): no precision/"
                    "recall.", ref_path)
  scores = fid.evaluate(feats, ref.stats, ref_pool)
  record = {"fid_reference": ref_path,
            "fid_reference_sha256": sharded_features.sha256(ref_path),
            "fid_reference_meta": meta,
            "fid_reference_images": None if ref.images is None
                                    else int(len(ref.images)),
            "inception_weights": wpath, "inception_weights_sha256": wsha}
  return scores, record


def sampler_provenance(directory: str) -> dict:
  """How a sample set was made, from its samples.json."""
  with open(os.path.join(directory, sample_set_lib.SET_FILE)) as f:
    meta = json.load(f)
  spec = meta.get("spec", {})
  keys = ("solver", "num_steps", "rtol", "atol", "project", "guidance",
          "guidance_bands", "class_drop_t", "shared_bands", "seed",
          "use_ema")
  out = {k: spec.get(k) for k in keys}
  out.update({k: meta.get(k) for k in (
      "checkpoint_step", "ema_decay", "nfe_mean", "nfe_max", "complete",
      "num_samples", "transform", "cutoffs", "tau", "config_hash")})
  return out


def sample_set(run, params, step: int) -> str:
  """The directory of the set to score: evals.samples, or generated."""
  given = evals_spec(run.config).samples
  if given:
    if not os.path.isfile(os.path.join(given, sample_set_lib.SET_FILE)):
      raise ValueError(
          f"config.evals.samples={given!r} is not a sample set (no "
          f"{sample_set_lib.SET_FILE}); give a sample_mode/<tag> directory "
          "written by --mode=sample, or leave it empty to generate one.")
    return given
  if params is None:
    raise ValueError("generating a sample set needs the checkpoint.")
  return sample_set_lib.sample(run, params, step,
                               sample_quantization(run.config))


def evaluate(run, step: int, params) -> dict:
  """--mode=eval: the config.evals.metrics of checkpoint `step` with its
  inference params (see the module docstring); writes eval.json and
  returns its content."""
  ev = evals_spec(run.config)
  wanted = ev.metrics
  # Check the FID inputs before minutes of sampling.
  if "fid" in wanted:
    _, wpath = sharded_features.load_weights(ev.inception_weights,
                                             ev.check_weights_hash)
    if ev.fid_reference:
      sharded_features.check_reference(
          os.path.expanduser(ev.fid_reference), ev.protocol,
          sharded_features.sha256(wpath))
  out = {"checkpoint_step": int(step), "metrics": {}}
  if "loss" in wanted:
    out["metrics"].update(eval_loss(run, params, step, write=False))
  directory = None
  if "cheap" in wanted or "fid" in wanted:
    directory = sample_set(run, params, step)
    if "fid" in wanted:
      fid.check_quantization(directory, ev.protocol)
    s = sample_set_lib.load_samples(directory, limit=ev.num_samples)
    out.update(samples=directory, num_samples=int(len(s["images"])),
               sampler=sampler_provenance(directory))
    if "cheap" in wanted:
      ref, _ = reference_images(run.config)
      clf = find_classifier(run)
      if clf is None:
        logging.warning(
            "No classifier for %s at %s: no classifier_fd / class_accuracy; "
            "train one with python -m kflow_jax.tools.train_classifier "
            "--dataset=%s --out=PATH and set config.evals.classifier.",
            run.config.input.name, default_classifier_paths(run),
            run.config.input.name)
      out["metrics"].update(cheap_scores(run, s["images"], ref,
                                         labels=s["labels"], classifier=clf))
      out.update(reference_split=ev.reference_split,
                 num_reference=int(len(ref)), classifier=clf,
                 classifier_sha256=clf and sharded_features.sha256(clf),
                 cutoffs=list(run.path.cutoffs))
    if "fid" in wanted:
      scores, record = fid_scores(run, s["images"])
      out["metrics"].update(scores)
      out.update(record, protocol=ev.protocol)
  writer = metrics_io.MetricWriter(run.workdir)
  # One metrics.jsonl line per evaluation (eval_loss keeps its name).
  writer.write(step, {k if k.startswith("eval_") else f"eval_{k}": v
                      for k, v in out["metrics"].items()})
  writer.close()
  metrics_io.write_json(os.path.join(run.workdir, EVAL_FILE), out)
  if directory is not None:
    metrics_io.write_json(os.path.join(directory, EVAL_FILE), out)
  logging.info("Eval of step %d: %s", step,
               json.dumps(metrics_io.jsonable(out["metrics"])))
  return out


def eval_loss(run, params, step: int, write: bool = True) -> dict:
  """{"eval_loss", "eval_examples", "eval_band_loss"}, written to
  metrics.jsonl at `step` when `write`."""
  config = run.config
  # The training loss of the run's field (full-resolution or
  # scale-adaptive), with padding masked out.
  loss_fn = run.field.loss
  bs = int(config.batch_size)

  @jax.jit
  def eval_step(params, batch, i):
    keys = jax.random.split(
        jax.random.fold_in(jax.random.PRNGKey(int(config.seed) + 1), i), bs)
    _, aux, _ = loss_fn(params, batch, keys)
    return aux

  it = input_pipeline.create(
      config.input, global_batch_size=bs, seed=int(config.seed),
      process_index=jax.process_index(), process_count=jax.process_count(),
      split="eval")
  totals = None
  for i, local in enumerate(it):
    if int(config.eval_steps) > 0 and i >= int(config.eval_steps):
      break
    batch = sharding.global_batch(
        run.mesh, {k: local[k] for k in ("image", "label", "caption", "mask")
                   if k in local})
    aux = jax.device_get(eval_step(params, batch, i))
    totals = aux if totals is None else jax.tree.map(np.add, totals, aux)
  result = {"eval_loss": float(totals["loss_sum"] / totals["mask_count"]),
            "eval_examples": float(totals["mask_count"])}
  if "band_loss_sum" in totals:
    result["eval_band_loss"] = kamp.band_mean(totals["band_loss_sum"],
                                              totals["band_count"])
  if write:
    writer = metrics_io.MetricWriter(run.workdir)
    writer.write(step, result)
    writer.close()
  return result
