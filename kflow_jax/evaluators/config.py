"""config.evals: what --mode=eval and the in-training evaluation score.

Kept apart from kflow_jax/evaluators/evaluate.py so config_lib.base() can build the
section without importing jax-heavy modules before jax is configured.
"""
import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Every config.evals key with its default."""
  return ml_collections.ConfigDict(dict(
      metrics=("loss", "cheap"),  # any of METRICS, for --mode=eval
      # A sample-set directory (sample_mode/<tag> of --mode=sample) to
      # score; "": generate one from config.sample (resumable).
      samples="",
      num_samples=0,              # score the set's first N; 0: all of it
      reference_split="eval",     # input_pipeline split of the reference
      num_reference=0,            # its first N examples; 0: all
      # Classifier .npz of tools/train_classifier; "": look in the workdir
      # and ~/.cache/kflow_jax (none found: no classifier metrics).
      classifier="",
      # FID: pytorch-fid's .pth ("": $KFLOW_INCEPTION_WEIGHTS or
      # ~/.cache/kflow_jax/), its sha256 check (off only for test weights),
      # the reference statistics file, the preprocessing protocol.
      inception_weights="", check_weights_hash=True, fid_reference="",
      protocol="pytorch_fid", feature_batch_size=50,
      # During training: cheap metrics of train_num_samples fresh samples
      # every every_steps steps (0: off), and the spectrum / band-loss PNGs.
      every_steps=0, train_num_samples=256, plots=True))
