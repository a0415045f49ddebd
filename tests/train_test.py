"""End-to-end training: runlocal configs on 1 and 8 devices, outputs in the
workdir, the non-finite guard, sample/eval modes."""
import json
import os

import jax
import numpy as np
import pytest

from configs import digits
from kflow_jax.infra import checkpointing
from kflow_jax.evaluators import evaluate
from kflow_jax.run import experiment
from kflow_jax.generate import sample_set
from kflow_jax.modes import train
from kflow_jax.run import train_state


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _cfg(**overrides):
  c = digits.get_config("runlocal")
  c.update_from_flattened_dict(overrides)
  return c


@pytest.mark.slow
def test_one_and_eight_devices_same_loss_and_outputs(tmp_path):
  w1, w8 = str(tmp_path / "d1"), str(tmp_path / "d8")
  s1 = train.train_and_evaluate(_cfg(**{"sample.at_end": False}), w1,
                                devices=jax.devices()[:1])
  # 8 devices as data 4 x fsdp 2: params sharded by the logical rules.
  s8 = train.train_and_evaluate(_cfg(**{"mesh.fsdp": 2}), w8,
                                devices=jax.devices()[:8])
  specs = [x.sharding.spec for x in jax.tree.leaves(s8.params)]
  assert any("fsdp" in str(s) for s in specs), specs
  m1, m8 = _metrics(w1), _metrics(w8)
  assert [m["step"] for m in m1] == [2, 4, 6] == [m["step"] for m in m8]
  for a, b in zip(m1, m8):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-4)
    np.testing.assert_allclose(a["band_loss"], b["band_loss"], rtol=2e-4)
    for key in ("grad_norm", "learning_rate", "images_per_s_per_device",
                "step_time_s", "eta_s", "flops_per_step",
                "tflops_per_s_per_device"):
      assert key in a
    # flops_per_step sums the per-device programs: about the same step on
    # 1 and 8 devices (the replicated parts of the update repeat per device).
    np.testing.assert_allclose(a["flops_per_step"], b["flops_per_step"],
                               rtol=0.1)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
  assert int(s8.step) == 6 and bool(s8.finite)
  # What lands in the workdir.
  files = os.listdir(w8)
  for name in ("config.json", "metrics.jsonl", "samples.png",
               "band_strip.png", "checkpoints", "tensorboard"):
    assert name in files, files
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(w8, "tensorboard")))
  ck = checkpointing.Checkpointer(w8, keep=3)
  assert ck.all_steps() == [2, 4, 6]
  ck.close()
  # A finished run relaunched is a no-op that keeps its state.
  again = train.train_and_evaluate(_cfg(**{"mesh.fsdp": 2}), w8,
                                   devices=jax.devices()[:8])
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(s8.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert len(_metrics(w8)) == 3
  # --mode=sample and --mode=eval on the trained run.
  run = experiment.setup(_cfg(**{"sample.num_samples": 4, "mesh.fsdp": 2,
                                  "sample.shared_bands": (1,)}), w8,
                         "sample", devices=jax.devices()[:8])
  step, state, _ = experiment.restore(run)
  params = experiment.inference_params(run, state)
  images = sample_set.load_samples(sample_set.sample(run, params,
                                                    step))["images"]
  assert images.shape == (4, 16, 16, 1) and images.dtype == np.uint8
  out = os.listdir(os.path.join(w8, "sample_mode"))
  assert os.path.exists(os.path.join(w8, "sample_mode", out[0], "grid.png"))
  run = experiment.setup(_cfg(**{"mesh.fsdp": 2}), w8, "eval",
                         devices=jax.devices()[:8])
  result = evaluate.eval_loss(run, experiment.inference_params(run, state),
                              step)
  assert np.isfinite(result["eval_loss"]) and result["eval_examples"] == 32


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  # Adam's step is ~lr, so lr 1e30 blows the params up after warmup.
  c = _cfg(**{"optim.learning_rate": 1e30, "optim.grad_clip_norm": 0.0,
              "checkpoint_every_steps": 1, "sample.at_end": False})
  with pytest.raises(train.NonFiniteLossError,
                     match=r"Non-finite loss at step (\d+)[\s\S]*last good "
                     r"checkpoint is step"):
    train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3)
  steps = ck.all_steps()
  ck.close()
  assert steps and steps[-1] < 6


def test_apply_update_skips_non_finite_steps():
  import optax  # pylint: disable=g-import-not-at-top
  params = {"w": np.ones(3, np.float32)}
  tx = optax.sgd(0.1)
  s0 = train_state.create(params, tx, jax.random.PRNGKey(0), (0.5,))
  grads = {"w": np.ones(3, np.float32)}
  s1 = train_state.apply_update(s0, grads, tx, (0.5,), np.bool_(True))
  np.testing.assert_allclose(s1.params["w"], 0.9)
  # EMA warmup: decay min(0.5, 1/10) at step 0.
  np.testing.assert_allclose(s1.ema_params[0]["w"], 0.1 * 1.0 + 0.9 * 0.9,
                             rtol=1e-6)
  np.testing.assert_allclose(train_state.ema_decay_at(0.5, 1000), 0.5)
  s2 = train_state.apply_update(s1, grads, tx, (0.5,), np.bool_(False))
  assert not bool(s2.finite) and int(s2.step) == 1
  np.testing.assert_allclose(s2.params["w"], 0.9)
  # Sticky: later finite steps change nothing either.
  s3 = train_state.apply_update(s2, grads, tx, (0.5,), np.bool_(True))
  np.testing.assert_allclose(s3.params["w"], 0.9)
  with pytest.raises(ValueError, match="EMA decay"):
    train_state.create(params, tx, jax.random.PRNGKey(0), (1.5,))
