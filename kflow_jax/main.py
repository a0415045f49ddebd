r"""Entry point: train, sample or evaluate one experiment.

  python -m kflow_jax.main --config=configs/digits.py --workdir=DIR
  python -m kflow_jax.main --config=configs/digits.py:runlocal \
      --workdir=DIR --config.total_steps=20
  python -m kflow_jax.main --config=configs/digits.py --workdir=DIR \
      --mode=sample --config.sample.num_samples=256

Several hosts: every host runs the same command with --num_processes,
--process_id and --coordinator_address (or the JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables; on Cloud TPU and
SLURM jax finds them itself, pass --distributed). Errors a user can fix
(bad config value, unknown name, missing data set, unusable workdir, a
non-finite loss) end the program with the message and exit status 1, not a
traceback.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/digits.py:transform=identity or "
    "configs/digits.py:transform=identity:runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and samples.")
_MODE = flags.DEFINE_enum(
    "mode", "train",
    ["train", "sample", "eval", "restore", "edit", "mix", "hybrid"],
    "What to do: restore / edit / mix / hybrid read config.restore "
    "(kflow_jax/modes/restoration.py; hybrid: kflow_jax/modes/hybrid.py, "
    "runs with condition slots).")
_STEP = flags.DEFINE_integer(
    "step", None,
    "sample / eval / restore / edit / mix / hybrid: use the checkpoint of this step "
    "(one the run kept) instead of the newest; train ignores it.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Continue a run in --workdir although the config differs from the saved "
    "config.json (the old one is kept as config.<n>.json).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() with auto-detection (Cloud TPU pods, "
    "SLURM); implied by --num_processes > 1.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "host:port of process 0 for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "1")),
    "Number of processes (hosts) in the run.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ.get("JAX_PROCESS_ID", "0")),
    "This process's index in [0, num_processes).")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0,
    "CPU backend only: number of CPU devices per process (0 = leave as is); "
    "used by the local multi-process launcher and tests.")


def _init_jax():
  """Configures jax before first use; initializes multi-process runs."""
  import jax  # pylint: disable=g-import-not-at-top
  multi = _NUM_PROCESSES.value > 1
  if _CPU_DEVICES.value > 0:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  if multi:
    # XLA's default CPU collectives are in-process only; gloo runs them
    # across processes (docs/environment.md#multi-process-cpu). Only the CPU backend reads it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if multi:
    if not _COORDINATOR.value:
      raise ValueError(
          "--num_processes > 1 needs --coordinator_address=host:port (or "
          "JAX_COORDINATOR_ADDRESS).")
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      raise ValueError(
          f"--process_id={_PROCESS_ID.value} must be in [0, "
          f"{_NUM_PROCESSES.value}).")
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  return jax


class _QuietLibraries:
  """Drops INFO lines of Orbax (dozens per checkpoint); warnings stay."""

  def filter(self, record):
    return record.levelno > 20 or "/orbax/" not in record.pathname


def run(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required.")
  try:
    _CONFIG.value.keys()
  except OSError as e:
    # ml_collections reports a config file it cannot load as an OSError
    # with the attempts on several lines.
    detail = " ".join(str(e).split())
    raise ValueError(
        f"could not load the --config file ({detail}). Give the path of a "
        "file in configs/ relative to the current directory (run from the "
        "repository root), e.g. --config=configs/digits.py.") from None
  logging.get_absl_handler().addFilter(_QuietLibraries())
  jax = _init_jax()
  # Imported after jax is configured: they touch devices at import time.
  # pylint: disable=g-import-not-at-top
  from kflow_jax.evaluators import evaluate
  from kflow_jax.run import experiment
  from kflow_jax.generate import sample_set
  from kflow_jax.modes import restoration
  from kflow_jax.modes import train
  # pylint: enable=g-import-not-at-top
  config = _CONFIG.value
  logging.info("JAX %s, process %d of %d, %d local / %d global devices: %s",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[:8])
  logging.info("Mode %s, workdir %s, config:\n%s", _MODE.value,
               _WORKDIR.value, config)
  allow = _ALLOW_CONFIG_CHANGE.value
  if config.get("task", "image") == "assembly":
    # Molecular clusters (configs/molecules.py): their own train / sample /
    # eval on rigid poses.
    from kflow_jax.modes import assembly  # pylint: disable=g-import-not-at-top
    assembly.main(config, _WORKDIR.value, _MODE.value, _STEP.value, allow)
    return
  if _MODE.value == "train":
    train.train_and_evaluate(config, _WORKDIR.value,
                             allow_config_change=allow)
    return
  # restore / edit / mix read a trained run exactly as sampling does.
  steer = _MODE.value in restoration.MODES
  run_ = experiment.setup(config, _WORKDIR.value,
                          "sample" if steer else _MODE.value,
                          allow_config_change=allow)
  step, state, _ = experiment.restore(run_, step=_STEP.value)
  params = experiment.inference_params(run_, state)
  if steer:
    restoration.main(run_, params, step, _MODE.value)
  elif _MODE.value == "sample":
    sample_set.sample(run_, params, step,
                      evaluate.sample_quantization(config))
  else:
    evaluate.evaluate(run_, step, params)  # config.evals: what is scored


def main(argv):
  try:
    run(argv)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    # FloatingPointError: train.NonFiniteLossError (not imported here, so
    # that jax is configured before any kflow_jax module loads).
    # Errors with a message meant for the user: no traceback, exit 1.
    # Printed once, as the last line: not also as an absl error log line.
    logging.flush()
    print(f"kflow_jax: error: {e}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv):
  """absl flag parsing, but a bad --config.<key> override (unknown key, as
  the config is locked, or a value of the wrong type) is a one-line error
  naming the override instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError,
          flags.Error) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    print(f"kflow_jax: error: bad flag or config override ({e}); overrides "
          f"given: {overrides}. Config keys are fixed by the config file: "
          "check the spelling against it (a mistyped key is refused, not "
          "added).", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
