"""--mode=sample at scale, as a user runs it: the set does not depend on the
device count, a killed run resumes to the same set, every chunk records
how it was made (NFE of an adaptive solver equal to the counted network
calls), and another set is never overwritten."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from kflow_jax.run import experiment
from kflow_jax.run import field as field_lib
from kflow_jax.generate import sample_set
from kflow_jax.modes import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/digits.py:cond,runlocal"


def _cfg():
  c = digits.get_config("cond,runlocal")
  c.total_steps = 4
  c.sample.at_end = False
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("gen_run"))
  train.train_and_evaluate(_cfg(), wd, devices=jax.devices()[:1])
  return wd


def _copy(trained, tmp_path, name):
  dst = str(tmp_path / name)
  shutil.copytree(trained, dst)
  return dst


def _cmd(wd, *flags):
  return [sys.executable, "-m", "kflow_jax.main", CONFIG, f"--workdir={wd}",
          "--mode=sample", "--config.total_steps=4",
          "--config.sample.at_end=False", *flags]


def _env(devices):
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _set_dir(wd):
  (name,) = os.listdir(os.path.join(wd, "sample_mode"))
  return os.path.join(wd, "sample_mode", name)


def _sample(wd, devices, *flags):
  p = subprocess.run(_cmd(wd, *flags), cwd=REPO, env=_env(devices),
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  return p.stderr


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_set(trained, tmp_path):
  flags = ("--config.sample.num_samples=20", "--config.sample.batch_size=8")
  w1, w8 = _copy(trained, tmp_path, "d1"), _copy(trained, tmp_path, "d8")
  _sample(w1, 1, *flags)
  log = _sample(w8, 8, *flags)
  assert "NFE 4" in log
  a, b = (sample_set.load_samples(_set_dir(w)) for w in (w1, w8))
  np.testing.assert_array_equal(a["indices"], np.arange(20))
  np.testing.assert_array_equal(a["labels"], np.arange(20) % 10)
  np.testing.assert_array_equal(a["labels"], b["labels"])
  # Same noise per sample index; the network's float sums may round
  # differently with another batch split, by at most one grey level.
  diff = np.abs(a["images"].astype(int) - b["images"].astype(int))
  assert diff.max() <= 1 and np.mean(diff == 0) > 0.99
  meta = [json.load(open(os.path.join(_set_dir(w), sample_set.SET_FILE)))
          for w in (w1, w8)]
  assert [m["chunk_size"] for m in meta] == [8, 8]
  assert meta[0]["complete"] and meta[0]["nfe_max"] == 4
  for key in ("checkpoint_step", "ema_decay", "spec", "tau", "cutoffs",
              "transform", "config_hash"):
    assert meta[0][key] == meta[1][key], key


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_set(trained, tmp_path):
  flags = ("--config.sample.num_samples=96", "--config.sample.batch_size=8",
           "--config.sample.num_steps=200")
  full, cut = _copy(trained, tmp_path, "full"), _copy(trained, tmp_path,
                                                      "cut")
  _sample(full, 1, *flags)
  proc = subprocess.Popen(_cmd(cut, *flags), cwd=REPO, env=_env(1),
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  mark = lambda: os.path.isdir(os.path.join(cut, "sample_mode")) and (
      os.path.exists(os.path.join(_set_dir(cut), "chunk_000002.npz")))
  while not mark():
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = sorted(f for f in os.listdir(_set_dir(cut)) if f.startswith("chunk"))
  assert 3 <= len(done) < 12, done  # killed mid-way
  log = _sample(cut, 1, *flags)
  assert f"at chunk {len(done)} of 12" in log
  a, b = (sample_set.load_samples(_set_dir(w)) for w in (full, cut))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_another_set_in_the_directory_is_refused(trained, tmp_path):
  wd = _copy(trained, tmp_path, "w")
  _sample(wd, 1, "--config.sample.num_samples=8")
  p = subprocess.run(_cmd(wd, "--config.sample.num_samples=16"), cwd=REPO,
                     env=_env(1), capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 1 and "another sample set" in p.stderr
  assert "Traceback" not in p.stderr


class _CountingModel:
  """A stand-in network v = -x that counts its calls on the host."""

  def __init__(self):
    self.calls = 0

  def _count(self):
    self.calls += 1

  def apply(self, variables, x, t, y, train=False):
    del variables, t, y, train
    jax.debug.callback(self._count)
    return -x


@pytest.mark.slow
def test_adaptive_nfe_equals_counted_calls(trained, tmp_path):
  c = _cfg()
  c.sample.solver = "dopri5"
  c.sample.num_samples = 6
  c.sample.batch_size = 6
  c.sample.guidance = 1.0
  run = experiment.setup(c, _copy(trained, tmp_path, "w"), "sample",
                         devices=jax.devices()[:1])
  model = _CountingModel()
  run = run._replace(model=model, field=field_lib.build(
      c, run.path, model, run.mesh, run.num_classes, scale_adaptive=False))
  fn, chunk = sample_set.make_chunk_fn(run)
  _, _, nfe = fn({}, np.int32(0))
  jax.effects_barrier()
  assert chunk == 6 and int(nfe) == model.calls > 6
  # The same count lands in samples.json and the log of --mode=sample.
  d = sample_set.sample(run, {}, 4)
  meta = json.load(open(os.path.join(d, sample_set.SET_FILE)))
  assert meta["chunks"]["0"]["nfe"] == int(nfe) == meta["nfe_max"]
  assert meta["spec"]["solver"] == "dopri5"


@pytest.mark.slow
def test_truncated_set_for_the_adm_protocol(trained, tmp_path):
  """A set sampled for FID protocol "adm" holds the sampler's output
  truncated to uint8 as ADM's sampler does, beside the rounded set, and
  says so in samples.json; scoring it under the other protocol is refused."""
  from kflow_jax.evaluators import fid  # pylint: disable=g-import-not-at-top
  from kflow_jax.generate import files  # pylint: disable=g-import-not-at-top
  c = _cfg()
  c.sample.num_samples = 6
  c.sample.batch_size = 6
  run = experiment.setup(c, _copy(trained, tmp_path, "w"), "sample",
                         devices=jax.devices()[:1])
  model = _CountingModel()  # v = -x: fast, and the same field for both
  run = run._replace(model=model, field=field_lib.build(
      c, run.path, model, run.mesh, run.num_classes, scale_adaptive=False))
  fn, _ = sample_set.make_chunk_fn(run)
  x = np.asarray(fn({}, np.int32(0))[0])
  rounded = sample_set.sample(run, {}, 4)
  trunc = sample_set.sample(run, {}, 4, quantization="truncate")
  assert trunc == rounded + "_trunc"
  got = sample_set.load_samples(trunc)["images"]
  np.testing.assert_array_equal(got, files.to_uint8(x, truncate=True))
  np.testing.assert_array_equal(
      got, np.clip((x + 1) * np.float32(127.5), 0, 255).astype(np.uint8))
  assert np.any(got != sample_set.load_samples(rounded)["images"])
  assert sample_set.quantization_of(trunc) == "truncate"
  assert sample_set.quantization_of(rounded) == "round"
  fid.check_quantization(trunc, "adm")
  with pytest.raises(ValueError, match="--config.evals.protocol=adm"):
    fid.check_quantization(rounded, "adm")
  with pytest.raises(ValueError, match="quantised by 'truncate'"):
    fid.check_quantization(trunc, "pytorch_fid")
