"""--mode=eval (loss, cheap, fid) through the command line, eval.json and
its provenance, tools/fid_reference with seeded random Inception weights,
the class-drop ratio tool, and the evaluation during training."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kflow_jax import config_lib
from kflow_jax.evaluators import class_drop
from kflow_jax.evaluators import config as evals_config
from kflow_jax import kamp
from kflow_jax.flow import paths
from kflow_jax.evaluators import fid
from kflow_jax.evaluators import inception
from kflow_jax.evaluators import plots
from kflow_jax.evaluators import sharded_features
from kflow_jax.evaluators import torch_pickle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ("--config.total_steps=4", "--config.log_every_steps=2",
         "--config.evals.every_steps=2", "--config.evals.train_num_samples=8")


def _run(module, args, cache, env=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **(env or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900)


def _ok(p):
  assert p.returncode == 0, p.stderr[-3000:]
  return p


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
  """A 4-step digits run with the in-training evaluation every 2 steps."""
  wd = str(tmp_path_factory.mktemp("digits"))
  _ok(_run("kflow_jax.main", ["--config=configs/digits.py:runlocal",
                              f"--workdir={wd}", *TRAIN], cache))
  return wd


@pytest.fixture(scope="module")
def clf_path(tmp_path_factory, cache):
  out = str(tmp_path_factory.mktemp("clf") / "digits.npz")
  _ok(_run("kflow_jax.tools.train_classifier",
           ["--dataset=digits", f"--out={out}", "--steps=30"], cache))
  return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """Seeded random FID Inception weights as a pytorch-fid style .pth."""
  path = str(tmp_path_factory.mktemp("inception") / "random.pth")
  return torch_pickle.save_state_dict(
      path, inception.to_pytorch_fid_state_dict(
          inception.random_variables(0)))


def _metrics(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_in_training_eval_at_its_steps(trained):
  rows = [r for r in _metrics(trained) if "eval_random_fd" in r]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    for k in ("eval_sliced_w2", "eval_spectrum_error",
              "eval_spectrum_error_band0", "eval_spectrum_error_band1"):
      assert np.isfinite(r[k]), k
  for png in ("spectrum.png", "band_loss.png"):
    assert os.path.getsize(os.path.join(trained, png)) > 1000, png


@pytest.mark.slow
def test_mode_eval_writes_eval_json(trained, clf_path, cache):
  _ok(_run("kflow_jax.main", [
      "--config=configs/digits.py:runlocal", f"--workdir={trained}", *TRAIN,
      "--mode=eval", f"--config.evals.classifier={clf_path}",
      "--config.evals.num_reference=64"], cache))
  with open(os.path.join(trained, "eval.json")) as f:
    out = json.load(f)
  m = out["metrics"]
  for k in ("eval_loss", "spectrum_error", "spectrum_error_band1",
            "sliced_w2", "random_fd", "classifier_fd"):
    assert np.isfinite(m[k]), k
  assert "class_accuracy" not in m  # unconditional: no requested labels
  assert len(m["eval_band_loss"]) == 2
  assert out["checkpoint_step"] == 4 and out["num_samples"] == 8
  assert out["num_reference"] == 64 and out["classifier"] == clf_path
  s = out["sampler"]
  assert (s["solver"], s["num_steps"], s["nfe_mean"]) == ("euler", 4, 4.0)
  assert s["checkpoint_step"] == 4 and s["guidance"] == 1.0
  # The copy beside the sample set, and the metrics in metrics.jsonl.
  assert os.path.exists(os.path.join(out["samples"], "eval.json"))
  assert any("eval_classifier_fd" in r for r in _metrics(trained))


@pytest.mark.slow
def test_fid_end_to_end_with_random_weights(trained, weights, cache,
                                            tmp_path):
  ref = str(tmp_path / "ref.npz")
  p = _ok(_run("kflow_jax.tools.fid_reference", [
      "--config=configs/digits.py:runlocal", f"--out={ref}",
      "--max_examples=16", f"--weights={weights}", "--nocheck_hash",
      "--batch_size=8"], cache))
  assert "16 examples" in p.stdout
  r = fid.load_reference(ref, load_images=True)
  assert r.images.shape == (16, 16, 16, 3)
  assert r.stats.sigma.dtype == np.float64
  assert sharded_features.reference_meta(ref)["protocol"] == "pytorch_fid"
  _ok(_run("kflow_jax.main", [
      "--config=configs/digits.py:runlocal", f"--workdir={trained}", *TRAIN,
      "--mode=eval", "--config.evals.metrics=('fid',)",
      f"--config.evals.fid_reference={ref}",
      f"--config.evals.inception_weights={weights}",
      "--config.evals.check_weights_hash=False",
      "--config.evals.feature_batch_size=8"], cache))
  with open(os.path.join(trained, "eval.json")) as f:
    out = json.load(f)
  for k in ("fid", "sfid", "inception_score", "precision", "recall"):
    assert np.isfinite(out["metrics"][k]), k
  assert out["protocol"] == "pytorch_fid"
  assert out["fid_reference_sha256"] == sharded_features.sha256(ref)
  assert out["inception_weights_sha256"] == sharded_features.sha256(weights)


# Needs the trained run; inception_test checks the message in process.
@pytest.mark.slow
def test_missing_inception_weights_is_one_line(trained, cache, tmp_path):
  missing = str(tmp_path / "nope.pth")
  p = _run("kflow_jax.main", [
      "--config=configs/digits.py:runlocal", f"--workdir={trained}", *TRAIN,
      "--mode=eval", "--config.evals.metrics=('fid',)",
      f"--config.evals.inception_weights={missing}"], cache)
  assert p.returncode == 1 and "Traceback" not in p.stderr
  assert "nope.pth" in p.stderr and inception.WEIGHTS_URL in p.stderr


def test_reference_of_the_wrong_kind_is_named(tmp_path):
  samples = str(tmp_path / "samples.npz")
  np.savez(samples, np.zeros((2, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="sample batch"):
    sharded_features.check_reference(samples, "pytorch_fid", "x")
  # Any other .npz (as a classifier's): no training run needed.
  other = str(tmp_path / "classifier.npz")
  np.savez(other, w=np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="not a reference batch"):
    sharded_features.check_reference(other, "pytorch_fid", "x")
  ref = str(tmp_path / "ref.npz")
  d, ds = inception.POOL_DIM, 5
  np.savez(ref, mu=np.zeros(d), sigma=np.eye(d), mu_s=np.zeros(ds),
           sigma_s=np.eye(ds), meta_protocol=np.asarray("adm"),
           meta_weights_sha256=np.asarray("abc"))
  with pytest.raises(ValueError, match="protocol 'adm'"):
    sharded_features.check_reference(ref, "pytorch_fid", "abc")
  with pytest.raises(ValueError, match="other Inception weights|weights of"):
    sharded_features.check_reference(ref, "adm", "def")


@pytest.mark.slow
def test_class_drop_ratio_tool(tmp_path, clf_path, cache):
  wd = str(tmp_path / "cond")
  cfg = "--config=configs/digits.py:cond,runlocal"
  _ok(_run("kflow_jax.main", [cfg, f"--workdir={wd}",
                              "--config.total_steps=2"], cache))
  p = _ok(_run("kflow_jax.tools.class_drop_ratio", [
      cfg, f"--workdir={wd}", "--fraction=0.3",
      f"--config.evals.classifier={clf_path}",
      "--config.evals.num_reference=64"], cache))
  with open(os.path.join(wd, "cdr.json")) as f:
    out = json.load(f)
  assert json.loads(p.stdout.strip().splitlines()[-1])["ratio"] == (
      out["ratio"])
  assert np.isfinite(out["ratio"]) and out["metric"] == "class_accuracy"
  assert 0 <= out["class_accuracy_drop"] <= 1
  assert out["sets"]["drop"]["sampler"]["class_drop_t"] == 0.3
  assert out["sets"]["full"]["sampler"]["class_drop_t"] is None
  assert out["tau"] == [0.0, 0.5, 1.0]
  np.testing.assert_allclose(out["band_flowed_share_at_drop"], [0.6, 0.0])


@pytest.mark.slow
def test_class_drop_ratio_with_inception_fid(tmp_path, weights, clf_path,
                                             cache):
  """The paper's ratio as a user types it: --metric=fid with Inception
  weights (random ones here) is FID(label dropped) / FID(kept); without
  weights it is the classifier FD, and cdr.json names which."""
  wd = str(tmp_path / "cond")
  cfg = "--config=configs/digits.py:cond,runlocal"
  _ok(_run("kflow_jax.main", [cfg, f"--workdir={wd}",
                              "--config.total_steps=2"], cache))
  small = ("--config.sample.num_samples=10", "--config.evals.num_reference=16",
           "--config.evals.feature_batch_size=8")
  p = _ok(_run("kflow_jax.tools.class_drop_ratio", [
      cfg, f"--workdir={wd}", "--fraction=0.3", "--metric=fid",
      f"--config.evals.inception_weights={weights}",
      "--config.evals.check_weights_hash=False", *small], cache))
  with open(os.path.join(wd, "cdr.json")) as f:
    out = json.load(f)
  assert out["metric"] == class_drop.INCEPTION_FID == "inception_fid"
  assert out["metric_requested"] == "fid" and out["metric_note"] is None
  keep, drop = (out["sets"][k]["metrics"]["inception_fid"]
                for k in ("full", "drop"))
  assert (out["metric_full"], out["metric_drop"]) == (keep, drop)
  assert np.isfinite(out["ratio"]) and keep > 0 and drop > 0
  assert out["ratio"] == pytest.approx(drop / keep, rel=1e-12)
  assert out["inception_weights_sha256"] == sharded_features.sha256(weights)
  assert out["protocol"] == "pytorch_fid"
  assert out["fid_reference"] == "eval split, 16 images"
  assert out["sets"]["drop"]["sampler"]["class_drop_t"] == 0.3
  assert json.loads(p.stdout.strip().splitlines()[-1])["metric"] == (
      "inception_fid")
  # No weights given and none in the cache: the classifier FD, named so.
  home = tmp_path / "home"
  home.mkdir()
  _ok(_run("kflow_jax.tools.class_drop_ratio", [
      cfg, f"--workdir={wd}", "--fraction=0.3", "--metric=fid",
      f"--config.evals.classifier={clf_path}", *small], cache,
           env={"HOME": str(home), inception.WEIGHTS_ENV: ""}))
  with open(os.path.join(wd, "cdr.json")) as f:
    out = json.load(f)
  assert out["metric"] == "classifier_fd" and out["metric_requested"] == "fid"
  assert "no Inception weights" in out["metric_note"]
  assert "inception_weights" not in out
  assert out["ratio"] == pytest.approx(out["metric_drop"] / out["metric_full"],
                                       rel=1e-12)


def test_cdr_finds_inception_weights_where_eval_looks(tmp_path, monkeypatch):
  """--metric=fid: evals.inception_weights, else $KFLOW_INCEPTION_WEIGHTS,
  else the cache file; None (the classifier FD) only when none is there."""
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  ev = evals_config.parse_evals(config_lib.base().evals)
  assert class_drop.inception_weights(ev) is None
  cached = tmp_path / ".cache" / "kflow_jax" / inception.WEIGHTS_FILENAME
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b"")
  assert class_drop.inception_weights(ev) == str(cached)
  monkeypatch.setenv(inception.WEIGHTS_ENV, "/elsewhere/w.pth")
  assert class_drop.inception_weights(ev) == "/elsewhere/w.pth"
  given = ev._replace(inception_weights="~/mine.pth")
  assert class_drop.inception_weights(given) == str(tmp_path / "mine.pth")


@pytest.mark.slow
def test_class_drop_ratio_refuses_unconditional(trained, cache):
  p = _run("kflow_jax.tools.class_drop_ratio", [
      "--config=configs/digits.py:runlocal", f"--workdir={trained}",
      "--metric=random_fd"], cache)
  assert p.returncode == 1 and "class-conditional" in p.stderr


def test_class_drop_ratio_refuses_unconditional_in_process():
  """The fast tier's check of that refusal, without a trained run."""
  from configs import digits  # pylint: disable=g-import-not-at-top
  from kflow_jax.run import experiment  # pylint: disable=g-import-not-at-top
  run = experiment.setup(digits.get_config("runlocal"), None, "tool")
  with pytest.raises(ValueError, match="class-conditional"):
    class_drop.class_drop_ratio(run, None, 0, 0.3)


def test_evals_spec_is_read_once_and_checked():
  """config.evals -> EvalSpec: counts of 0 mean all (None), bad values
  are refused with the key named, before any sampling."""
  ev = evals_config.parse_evals(config_lib.base().evals)
  assert ev.metrics == ("loss", "cheap") and ev.num_samples is None
  assert ev.num_reference is None and ev.protocol == "pytorch_fid"
  for key, value, match in (
      ("metrics", ("loss", "isc"), r"unknown \['isc'\]"),
      ("metrics", (), "choose from"),
      ("protocol", "tf", "protocol='tf'"),
      ("num_reference", -1, "num_reference=-1 must be >= 0"),
      ("feature_batch_size", 0, "feature_batch_size must be >= 1")):
    c = config_lib.base().evals
    c[key] = value
    with pytest.raises(ValueError, match=match):
      evals_config.parse_evals(c)


def test_flowed_share():
  t = kamp.get("fourier", shape=(8, 8, 1))
  path = paths.make_path(t, cutoffs=(0.0, 0.5, 1.0), tau=(0.0, 0.4, 1.0))
  np.testing.assert_allclose(class_drop.flowed_share(path, 0.2), [0.5, 0])
  np.testing.assert_allclose(class_drop.flowed_share(path, 0.7), [1, 0.5])


def test_torch_state_dict_writer_round_trip(tmp_path):
  sd = {"a.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "b": np.float64(2.5) * np.ones(()), "c": np.arange(5)}
  path = torch_pickle.save_state_dict(tmp_path / "x.pth", sd)
  back = torch_pickle.load_state_dict(path)
  for k, v in sd.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape
    np.testing.assert_array_equal(back[k], v)


def test_line_plot():
  k = np.linspace(0.05, 1, 9)
  img = plots.line_plot([("a", k, 1 / k ** 2), ("b", k, np.full(9, np.nan))],
                        log_x=True, log_y=True, vlines=[0.5],
                        size=(200, 120))
  assert img.shape == (120, 200, 3) and img.dtype == np.uint8
  assert (img != 255).any()

