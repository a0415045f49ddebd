"""experiments/common.py helpers that need no training: the cost record
of every command, and arms that resolve to the same config."""
import json
import os

from experiments import common


def test_commands_record_their_cost_and_the_root_sums_it(tmp_path):
  for arm in ("a", "b"):
    common.command(["-c", "import time; time.sleep(0.2)"],
                   str(tmp_path / "runs" / arm / "seed0" / "train.log"))
  cost = common.measured_cost(str(tmp_path))
  assert cost["commands"] == 2
  assert 0.4 <= cost["seconds"] < 30
  assert os.path.exists(tmp_path / "runs" / "a" / "seed0" / common.COST_FILE)


def _started(run, total_steps=800, drop=()):
  """Writes run's config.json as kflow_jax.main does when common.train
  starts it (the resolved config plus train()'s flags); `drop`: keys a run
  made before they existed lacks."""
  config = common.resolved_config(run)
  config.update(total_steps=total_steps, checkpoint_every_steps=200,
                keep_checkpoints=4, log_every_steps=50, sample_every_steps=0)
  config["sample"]["at_end"] = False
  for key in drop:
    section, name = key.split(".")
    del config[section][name]
  os.makedirs(run.workdir, exist_ok=True)
  with open(os.path.join(run.workdir, "config.json"), "w") as fh:
    json.dump(config, fh)


def test_arms_with_the_same_resolved_config_share_one_run(tmp_path):
  root = str(tmp_path)
  wd = lambda name, seed=0: os.path.join(root, "runs", name, f"seed{seed}")
  base = common.Run("default", "configs/digits.py:transform=fourier", (), 0,
                    wd("default"))
  # num_scales=2 is the config's own value: the same run.
  twin = common.Run("bands2", "configs/digits.py:transform=fourier",
                    ("--config.path.num_scales=2",), 0, wd("bands2"))
  other = twin._replace(name="bands3", overrides=(
      "--config.path.num_scales=3",), workdir=wd("bands3"))
  same = lambda run, steps=800: common._same_config_run(root, run, steps)  # pylint: disable=protected-access
  # Nothing started yet: every arm its own workdir.
  assert same(base) == base and same(twin) == twin
  # Once base has started (its config.json), twin trains in base's run ...
  _started(base)
  assert same(base) == base
  shared = same(twin)
  assert shared.workdir == base.workdir and common.same_run(shared, base)
  # ... but not for another schedule length, another config or seed.
  assert same(twin, 1900) == twin
  assert same(other) == other
  seed1 = twin._replace(seed=1, workdir=wd("bands2", 1))
  assert same(seed1) == seed1
  # Sampling keys are part of what an arm is (its scores are cached in the
  # run): an arm that changes one is not merged.
  sampled = twin._replace(overrides=twin.overrides + (
      "--config.sample.num_steps=7",))
  assert same(sampled) == sampled
  # A run made before a key was added (its config.json lacks the key) is
  # still found by an arm that leaves the key at its default.
  old = common.Run("old", "configs/digits.py:transform=wavelet",
                   ("--config.model.scale_adaptive=True",), 0, wd("old"))
  _started(old, drop=("model.coarse_units", "cond.slot_kinds"))
  twin_old = old._replace(name="twin_old", workdir=wd("twin_old"))
  assert same(twin_old).workdir == old.workdir
  # ... and an arm that sets it is another run.
  units = twin_old._replace(overrides=old.overrides + (
      "--config.model.coarse_units=mean",))
  assert same(units) == units


def test_an_arm_started_in_its_own_workdir_stays_there(tmp_path):
  root = str(tmp_path)
  a = common.Run("a", "configs/digits.py:transform=fourier", (), 0,
                 os.path.join(root, "runs", "a", "seed0"))
  b = a._replace(name="b", workdir=os.path.join(root, "runs", "b", "seed0"))
  _started(a)
  _started(b)
  assert common._same_config_run(root, b, 800) == b  # pylint: disable=protected-access


def test_added_keys_at_their_default_read_alike_from_json():
  """config.json stores tuples as lists: a newer key at its tuple default
  is still "at its default" there, and a set value is kept."""
  from kflow_jax import config_lib  # pylint: disable=g-import-not-at-top
  assert config_lib.without_added_defaults(
      {"sample.slot_captions": [], "seed": 0}) == {"seed": 0}
  assert config_lib.without_added_defaults(
      {"sample.slot_captions": [["3", ""]]}) == {
          "sample.slot_captions": [["3", ""]]}
