"""The command line: exact resume after SIGKILL and SIGTERM, a two-process
run (gloo) matching one process, and clear errors for bad inputs.

Subprocesses share a persistent compilation cache, so relaunches of the
same program skip XLA compilation.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import digits
from kflow_jax.modes import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/digits.py:runlocal"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def _env(cache, devices=1):
  env = dict(os.environ)
  env.update(
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
      JAX_COMPILATION_CACHE_DIR=cache,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def _cmd(workdir, *flags):
  return [sys.executable, "-m", "kflow_jax.main", CONFIG,
          f"--workdir={workdir}", *flags]


RUN_FLAGS = ("--config.total_steps=24", "--config.checkpoint_every_steps=5",
             "--config.log_every_steps=1", "--config.sample.at_end=False")


def _last_step(workdir):
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      lines = f.read().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0
  except (FileNotFoundError, json.JSONDecodeError, IndexError):
    return 0


def _start_and_signal(workdir, cache, sig, after_step, after_ckpt=None):
  """Starts a run and sends `sig` once it logged `after_step` (and the
  checkpoint `after_ckpt` is complete)."""
  proc = subprocess.Popen(_cmd(workdir, *RUN_FLAGS), cwd=REPO,
                          env=_env(cache), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  ready = lambda: _last_step(workdir) >= after_step and (
      after_ckpt is None or after_ckpt in _steps(workdir))
  while not ready() and proc.poll() is None:
    assert time.time() < deadline, "run did not progress"
    time.sleep(0.02)
  assert proc.poll() is None, "run ended before the signal:\n" + (
      proc.stdout.read()[-3000:])
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=120)
  return proc.returncode, out


def _run(workdir, cache):
  p = subprocess.run(_cmd(workdir, *RUN_FLAGS), cwd=REPO, env=_env(cache),
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def _final_params(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path).item_metadata.tree
  # As numpy: the writer's devices (e.g. of two processes) need not exist.
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                      meta)
  tree = ckptr.restore(path, restore_args=args)
  return tree["params"], tree["ema_params"], tree["opt_state"]


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d)
                if s.isdigit()) if os.path.isdir(d) else []


@pytest.mark.slow
def test_sigkill_and_sigterm_resume_bit_identical(tmp_path, cache_dir):
  ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
  _run(ref, cache_dir)
  # SIGKILL after the first checkpoint: the relaunch redoes steps 6..
  rc, out = _start_and_signal(run, cache_dir, signal.SIGKILL, 7, 5)
  assert rc == -signal.SIGKILL
  assert 5 in _steps(run) and max(_steps(run)) < 24
  # Relaunch, then SIGTERM: it saves at the step it stopped and exits 0.
  rc, out = _start_and_signal(run, cache_dir, signal.SIGTERM, 12)
  assert rc == 0, out[-3000:]
  stopped = [int(s) for s in __import__("re").findall(
      r"Stopped by SIGTERM at step (\d+)", out)]
  assert stopped and stopped[0] in _steps(run), (stopped, _steps(run))
  p = _run(run, cache_dir)
  assert f"Resuming from the checkpoint at step {stopped[0]}" in p.stderr
  a, b = _final_params(ref, 24), _final_params(run, 24)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Each step appears once in metrics.jsonl despite the restarts.
  with open(os.path.join(run, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == list(range(1, 25))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, cache_dir):
  w2 = str(tmp_path / "two")
  port = _free_port()
  flags = ("--config.sample.at_end=False", "--num_processes=2",
           f"--coordinator_address=127.0.0.1:{port}", "--cpu_devices=2")
  env = _env(cache_dir)
  env.pop("XLA_FLAGS")
  procs = [subprocess.Popen(_cmd(w2, *flags, f"--process_id={i}"), cwd=REPO,
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  # Reference: the plain single-process run of the same config on as many
  # devices (2 processes x 2 devices).
  w1 = str(tmp_path / "one")
  c = digits.get_config("runlocal")
  c.sample.at_end = False
  state = train.train_and_evaluate(c, w1, devices=jax.devices()[:4])
  with open(os.path.join(w1, "metrics.jsonl")) as f1, open(
      os.path.join(w2, "metrics.jsonl")) as f2:
    m1 = [json.loads(x) for x in f1]
    m2 = [json.loads(x) for x in f2]
  assert [m["step"] for m in m1] == [m["step"] for m in m2]
  for a, b in zip(m1, m2):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  params2, _, _ = _final_params(w2, 6)
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(params2)):
    np.testing.assert_allclose(np.asarray(x), y, rtol=1e-5, atol=1e-6)


def _main_error(args, cache, tmp_path):
  p = subprocess.run([sys.executable, "-m", "kflow_jax.main", *args],
                     cwd=REPO, env=_env(cache), capture_output=True,
                     text=True, timeout=300)
  assert p.returncode != 0
  return p.stderr


def test_cli_errors_are_clear(tmp_path, cache_dir):
  w = str(tmp_path / "w")
  err = _main_error([CONFIG, f"--workdir={w}", "--config.optim.lr=1"],
                    cache_dir, tmp_path)
  assert "lr" in err and "Traceback" not in err
  err = _main_error(["--config=configs/imagenet.py",
                     f"--workdir={w}"], cache_dir, tmp_path)
  assert "kflow_jax: error:" in err and "imagenet" in err.lower()
  assert "Traceback" not in err
  assert "dataset_info.json" in err


def test_design_card_command_names_the_missing_latents(tmp_path, cache_dir):
  # The first command of the project's description, without the latents:
  # one error line naming them and how to build them, exit code 1.
  p = subprocess.run(
      [sys.executable, "-m", "kflow_jax.main",
       "--config=configs/imagenet_fourier.py",
       f"--workdir={tmp_path / 'w'}"],
      cwd=REPO, env=_env(cache_dir), capture_output=True, text=True,
      timeout=300)
  assert p.returncode == 1, p.stderr[-2000:]
  errors = [l for l in p.stderr.splitlines() if "error" in l.lower()]
  assert len(errors) == 1, errors  # printed once, not also as a log line
  assert errors[0].startswith("kflow_jax: error: data set 'latents'")
  assert "encode_latents" in errors[0] and "Traceback" not in p.stderr


def test_restore_without_checkpoint_is_one_error_line(tmp_path, cache_dir):
  # A mode that opens the checkpoint manager and finds nothing must close
  # it before exiting: the error is the last line of stderr, with no
  # shutdown traceback from the manager's threads after it.
  err = _main_error([CONFIG, f"--workdir={tmp_path / 'empty'}",
                     "--mode=restore"], cache_dir, tmp_path)
  errors = [l for l in err.splitlines() if "error" in l.lower()]
  assert errors == [err.strip().splitlines()[-1]], errors
  assert errors[0].startswith("kflow_jax: error: No checkpoint in")
  assert "Traceback" not in err and "RuntimeError" not in err


def test_imagenet_fourier_is_imagenet_with_fourier():
  import importlib.util  # pylint: disable=g-import-not-at-top

  def load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  fourier, imagenet = load("imagenet_fourier"), load("imagenet")
  assert (fourier.get_config().to_dict()
          == imagenet.get_config("transform=fourier").to_dict())
  assert (fourier.get_config("moe,runlocal").to_dict()
          == imagenet.get_config("transform=fourier,moe,runlocal").to_dict())
  with pytest.raises(ValueError, match="configs/imagenet.py:transform"):
    fourier.get_config("transform=pca")


@pytest.mark.parametrize("key,value,msg", [
    ("transform.name", "wavelett", "unknown K-amplitude transform"),
    ("model.name", "ditt", "unknown model"),
    ("input.name", "mnistt", "unknown data set"),
    ("batch_size", 12, "not divisible by the number of devices"),
])
def test_bad_config_values(tmp_path, key, value, msg):
  c = digits.get_config("runlocal")
  node = c
  *path, last = key.split(".")
  for k in path:
    node = node[k]
  node[last] = value
  with pytest.raises(ValueError, match=msg):
    train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:8])


def test_unwritable_workdir_and_other_run(tmp_path):
  c = digits.get_config("runlocal")
  with pytest.raises(ValueError, match="Cannot write to workdir"):
    train.train_and_evaluate(c, "/sys/kflow_jax_test", devices=jax.devices()[:1])
  (tmp_path / "config.json").write_text(json.dumps({"seed": 123}))
  with pytest.raises(ValueError, match="different config"):
    train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
