"""Config keys newer than old workdirs, and config.json read alike.

A run's config.json holds the keys that existed when it was made; these
helpers let a newer config compare and hash equal to it when it leaves the
newer keys at their defaults (checkpointing.config_diff / config_hash,
experiments/common.training_hash). Re-exported by config_lib.
"""

# Config keys added after runs were made, with the default they were
# added with. A config.json that lacks one ran with that default, so a
# relaunch with the default is the same run (checkpointing.config_diff),
# and a config at the default hashes as it did before the key existed
# (checkpointing.config_hash).
ADDED_KEYS = {
    "model.scale_adaptive": False,
    "model.coarse_units": "coefficients",
    "model.per_grid_experts": False,
    "loss.band_batch_sizes": None,
    "loss.band_batch_phases": (),
    "path.hide_input": False,
    "path.project_output": False,
    "cond.slot_starts": None,
    "cond.visibility": "causal",
    "cond.slot_dropout": 0.0,
    "cond.band_mix": 0.0,
    "cond.mix_fine_classes": None,
    "restore.row_classes": None,
    "restore.col_classes": None,
    "input.patch_split": "photos",
    "input.patch_eval_region": 0.25,
    "cond.slot_kinds": None,
    "cond.text.vocab_size": None,
    "cond.text.max_tokens": None,
    "cond.text.width": None,
    "cond.text.depth": None,
    "cond.text.heads": None,
    "cond.text.pool": None,
    "cond.text.encoder_path": "",
    "cond.text.freeze": False,
    "input.captions": "",
    "input.caption_seed": 0,
    "sample.slot_captions": (),
    # Molecular assembly configs (config_lib/assembly.py).
    "bands.rotations": "bands",
    "loss.project_centroids": False,
}


def flatten(d: dict, prefix: str = "") -> dict:
  """A nested config dict (config.json) -> {dotted key: value}."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def without_added_defaults(flat: dict) -> dict:
  """`flat` without the ADDED_KEYS that hold the default they were added
  with: a config that leaves a newer key at its default then reads as it
  did before the key existed (config hashes stay put as keys are added)."""
  return {k: v for k, v in flat.items()
          if not (k in ADDED_KEYS and same_value(v, ADDED_KEYS[k]))}


def same_value(a, b) -> bool:
  """a == b, with tuples and lists alike (config.json stores tuples as
  lists)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
  return a == b
