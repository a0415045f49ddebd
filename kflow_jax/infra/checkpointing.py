"""Checkpoints, workdir checks and preemption: everything that makes a run
resumable exactly.

Layout of a workdir:
  config.json        the run's config; a relaunch must match it
  checkpoints/<step>/state  TrainState (Orbax, sharded arrays)
  checkpoints/<step>/data   per-process input iterator state (JSON)

A checkpoint holds the whole TrainState (step, params, EMA, optimizer, rng)
and the data iterator position, so relaunching the same command continues
bit-identically (on the CPU). Orbax writes each checkpoint to a temporary
directory and renames it when complete, so a half-written checkpoint is
never listed; a corrupt complete one is skipped with a warning and the
previous one is used.
"""
import dataclasses
import hashlib
import json
import os
import signal
import threading
from typing import Any, Optional

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from kflow_jax import config_lib

class WorkdirError(ValueError):
  """The workdir cannot be used (permissions, or a different run in it)."""


def check_workdir(workdir: str) -> epath.Path:
  """Creates `workdir` if needed and checks it is writable."""
  if not workdir:
    raise WorkdirError("--workdir is required, e.g. --workdir=/tmp/kflow_run.")
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except (OSError, PermissionError) as e:
    raise WorkdirError(
        f"Cannot write to workdir {workdir!r} ({type(e).__name__}: {e}). "
        "Choose a directory you can write to, or fix its permissions.") from e
  return path


def config_diff(old: dict, new: dict) -> list:
  """Dotted keys whose values differ, ignoring config_lib.RUN_CONTROL_KEYS
  (a relaunch may change them); a key of config_lib.ADDED_KEYS missing on
  one side has the default it was added with."""
  a, b = config_lib.flatten(old), config_lib.flatten(new)
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key.split(".")[0] in config_lib.RUN_CONTROL_KEYS:
      continue
    missing = config_lib.ADDED_KEYS.get(key, "<missing>")
    if not config_lib.same_value(a.get(key, missing), b.get(key, missing)):
      diffs.append(f"{key}: {a.get(key, missing)!r} -> "
                   f"{b.get(key, missing)!r}")
  return diffs


def config_hash(config) -> str:
  """sha256 (16 hex digits) of what the config computes: every key but
  config_lib.RUN_CONTROL_KEYS, so outputs of one model share it."""
  flat = config_lib.flatten(
      json.loads(config.to_json_best_effort(sort_keys=True)))
  kept = {k: v for k, v in config_lib.without_added_defaults(flat).items()
          if k.split(".")[0] not in config_lib.RUN_CONTROL_KEYS}
  blob = json.dumps(kept, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def check_config(workdir: epath.Path, config, allow_change: bool = False,
                 write: bool = True) -> None:
  """Saves config.json, or checks a relaunch uses the same config.

  Raises WorkdirError when the workdir holds a run of a different config,
  unless `allow_change` (then the old file is kept as config.<n>.json).
  """
  new = json.loads(config.to_json_best_effort(sort_keys=True))
  path = workdir / "config.json"
  if path.exists():
    old = json.loads(path.read_text())
    diffs = config_diff(old, new)
    if diffs and not allow_change:
      raise WorkdirError(
          f"The workdir {os.fspath(workdir)!r} holds a run with a different "
          "config:\n  " + "\n  ".join(diffs) + "\nUse a new --workdir, or "
          "pass --allow_config_change to continue this run with the new "
          "config (the old one is kept as config.<n>.json).")
    if diffs:
      logging.warning("Continuing with a changed config:\n  %s",
                      "\n  ".join(diffs))
    if old == new or not write or jax.process_index() != 0:
      return
    n = 1
    while (workdir / f"config.{n}.json").exists():
      n += 1
    path.rename(workdir / f"config.{n}.json")
  if write and jax.process_index() == 0:
    path.write_text(json.dumps(new, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------
# Data iterator state: one JSON file per process, written from a snapshot
# taken when the batch was produced (the trainer prefetches ahead, so the
# live iterator is already further on than the step being saved).


class DataStateHandler(ocp.CheckpointHandler):
  """Saves/restores a per-process iterator state (dict or bytes)."""

  def _file(self, directory):
    return epath.Path(directory) / (
        f"process_{jax.process_index()}-of-{jax.process_count()}.json")

  def save(self, directory, args: "DataStateSave"):
    state = args.state
    if isinstance(state, bytes):
      payload = {"kind": "bytes", "state": state.decode()}
    else:
      payload = {"kind": "json", "state": state}
    self._file(directory).write_text(json.dumps(payload))

  def restore(self, directory, args: "DataStateRestore" = None):
    f = self._file(directory)
    if not f.exists():
      raise FileNotFoundError(
          f"{f} is missing: the checkpoint was written by a different number "
          "of processes; relaunch with the same number of processes.")
    payload = json.loads(f.read_text())
    state = payload["state"]
    return state.encode() if payload["kind"] == "bytes" else state

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


class Checkpointer:
  """Async Orbax manager for (TrainState, data state), keep N."""

  def __init__(self, workdir, keep: int = 3, async_save: bool = True, *,
               read_only: bool = False):
    """read_only: a reader (sample, eval, restore) neither creates the
    checkpoint folder nor cleans a writer's temporary folders, which Orbax
    does on a background thread that close() does not wait for (it died
    at interpreter exit after a reader's error: "cannot schedule new
    futures after shutdown")."""
    if int(keep) < 1:
      raise ValueError(f"config.keep_checkpoints must be >= 1, got {keep}.")
    self.directory = epath.Path(workdir) / "checkpoints"
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=int(keep), create=not read_only,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            read_only=read_only))

  def all_steps(self) -> list:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state) -> bool:
    """Starts an (async) save of `state` at `step`; no-op if it exists."""
    if step in self.manager.all_steps():
      return False
    args = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      args["data"] = DataStateSave(data_state)
    return self.manager.save(step, args=ocp.args.Composite(**args),
                             force=True)

  def restore_latest(self, abstract_state, with_data: bool = True,
                     step: Optional[int] = None):
    """Restores the newest readable checkpoint, or the one of `step`.

    Args:
      abstract_state: tree of jax.ShapeDtypeStruct with `.sharding` set.
      with_data: whether to read the data iterator state too.
      step: restore exactly this step (a WorkdirError naming the kept steps
        when it is not one of them); None: the newest readable one.

    Returns:
      (step, state, data_state), or None when there is no checkpoint.
    """
    steps = self.all_steps()
    if step is not None:
      if int(step) not in steps:
        raise WorkdirError(
            f"{self.directory} has no checkpoint of step {step}; it keeps "
            f"steps {steps} (config.keep_checkpoints). Pick one of them, or "
            "drop --step for the newest.")
      steps = [int(step)]
    errors = []
    for step in reversed(steps):
      args = {"state": ocp.args.StandardRestore(abstract_state)}
      if with_data:
        args["data"] = DataStateRestore()
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(**args))
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read means this checkpoint is unusable; an older
        # one still gives an exact resume from an earlier step.
        logging.warning(
            "Checkpoint at step %d in %s is unreadable (%s: %s); falling back "
            "to the previous one.", step, self.directory, type(e).__name__,
            str(e)[:500])
        errors.append(f"step {step}: {type(e).__name__}: {str(e)[:200]}")
        continue
      return step, out["state"], (out["data"] if with_data else None)
    if steps:
      raise RuntimeError(
          f"No readable checkpoint in {self.directory}:\n  " +
          "\n  ".join(errors) + "\nUse a new --workdir to start afresh.")
    return None

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


class StopSignal:
  """Turns SIGTERM into a flag the training loop polls between steps.

  With several processes every host must agree on the step at which to
  stop (the save is collective), so `should_stop` also consults Orbax's
  preemption sync point, which the JAX coordination service drives.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def install(self):
    if threading.current_thread() is not threading.main_thread():
      return self
    if jax.process_count() > 1:
      # JAX's coordination service owns SIGTERM in multi-process runs (its
      # preemption notifier feeds reached_preemption); don't replace it.
      return self
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("Received signal %d: will save a checkpoint and stop.",
                    signum)
    self._event.set()

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def should_stop(self, step: int,
                  checkpointer: Optional[Checkpointer] = None) -> bool:
    if jax.process_count() > 1 and checkpointer is not None:
      return checkpointer.reached_preemption(step)
    return self._event.is_set()
