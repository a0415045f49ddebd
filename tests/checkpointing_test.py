"""checkpointing: round trip with data state, fallback past a corrupt
checkpoint, config mismatch refusal, unusable workdirs."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kflow_jax import config_lib
from kflow_jax.infra import checkpointing
from kflow_jax.infra import sharding


def _state(v):
  return {"w": jnp.full((8, 4), v, jnp.float32), "step": jnp.int32(v)}


def _abstract(mesh):
  rep = sharding.replicated(mesh)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
      _state(0))


def test_round_trip_keep_n_and_fallback_past_corrupt(tmp_path):
  mesh = sharding.make_mesh(1, jax.devices()[:8])
  ck = checkpointing.Checkpointer(tmp_path, keep=2)
  for step in (1, 2, 3):
    assert ck.save(step, _state(step), {"pos": step, "epoch": 0})
  ck.wait()
  assert ck.all_steps() == [2, 3]          # keep N
  assert not ck.save(3, _state(9), None)   # never overwrites a step
  step, state, _ = ck.restore_latest(_abstract(mesh), step=2)  # --step
  assert step == 2
  np.testing.assert_array_equal(state["w"], np.full((8, 4), 2.0))
  with pytest.raises(checkpointing.WorkdirError, match=r"keeps steps \[2, 3\]"):
    ck.restore_latest(_abstract(mesh), step=1)
  step, state, data = ck.restore_latest(_abstract(mesh))
  assert step == 3 and data == {"pos": 3, "epoch": 0}
  np.testing.assert_array_equal(state["w"], np.full((8, 4), 3.0))
  ck.close()
  # Corrupt the newest checkpoint's array data: restore falls back to 2.
  state_dir = tmp_path / "checkpoints" / "3" / "state"
  for root, _, files in os.walk(state_dir):
    for f in files:
      if not f.endswith(".txt"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  ck = checkpointing.Checkpointer(tmp_path, keep=2)
  step, state, data = ck.restore_latest(_abstract(mesh))
  assert step == 2 and data["pos"] == 2
  np.testing.assert_array_equal(state["w"], np.full((8, 4), 2.0))
  ck.close()


def test_bytes_data_state_and_empty_dir(tmp_path):
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  ck = checkpointing.Checkpointer(tmp_path, keep=1, async_save=False)
  assert ck.restore_latest(_abstract(mesh)) is None
  ck.save(5, _state(5), b'{"a": 1}')
  step, _, data = ck.restore_latest(_abstract(mesh))
  assert step == 5 and data == b'{"a": 1}'
  ck.close()
  with pytest.raises(ValueError, match="keep_checkpoints"):
    checkpointing.Checkpointer(tmp_path, keep=0)


def test_config_mismatch_is_refused_unless_allowed(tmp_path):
  c = ml_collections.ConfigDict(dict(lr=1.0, total_steps=10,
                                     model=dict(depth=2)))
  checkpointing.check_config(tmp_path, c)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["depth"] == 2
  c.total_steps = 20                       # run control: fine
  checkpointing.check_config(tmp_path, c)
  c.model.depth = 3
  with pytest.raises(checkpointing.WorkdirError,
                     match=r"model.depth: 2 -> 3[\s\S]*new --workdir"):
    checkpointing.check_config(tmp_path, c)
  checkpointing.check_config(tmp_path, c, allow_change=True)
  assert json.loads((tmp_path / "config.1.json").read_text())[
      "model"]["depth"] == 2
  assert json.loads((tmp_path / "config.json").read_text())[
      "model"]["depth"] == 3


def test_run_control_keys_of_the_real_config_are_no_config_change():
  """Every key of config_lib.run_control() may change on relaunch, the
  hash of what the run computes stays; a computed key is a change."""
  base = config_lib.base()
  old = json.loads(base.to_json_best_effort())
  new = config_lib.base()
  new.total_steps = 9
  new.recipe_devices = 8
  new.sample.num_steps = 7
  new.restore.degradation = "blur:1.0"
  new.evals.metrics = ("fid",)
  assert checkpointing.config_diff(old, json.loads(
      new.to_json_best_effort())) == []
  assert checkpointing.config_hash(new) == checkpointing.config_hash(base)
  new.seed = 3
  assert checkpointing.config_diff(old, json.loads(
      new.to_json_best_effort())) == ["seed: 0 -> 3"]
  assert checkpointing.config_hash(new) != checkpointing.config_hash(base)


def test_unusable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(checkpointing.WorkdirError, match="Cannot write"):
    checkpointing.check_workdir(str(blocker / "run"))
  with pytest.raises(checkpointing.WorkdirError, match="required"):
    checkpointing.check_workdir("")
  if os.path.isdir("/sys"):
    # /sys refuses new directories even to root (EPERM).
    with pytest.raises(checkpointing.WorkdirError, match="permissions"):
      checkpointing.check_workdir("/sys/kflow_jax_test_run")
  if os.geteuid() != 0:                    # root ignores permissions
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(checkpointing.WorkdirError, match="permissions"):
      checkpointing.check_workdir(str(ro / "run"))
