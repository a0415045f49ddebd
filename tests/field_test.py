"""The run's field (kflow_jax/run/field.py): one object for the network as
the run trains it, full-resolution or scale-adaptive; the one random draw
per example (losses.draw_examples); the sampler's unroll option (FLOP
counts without patching jax); and setup's input-shape override."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from kflow_jax.flow import losses
from kflow_jax.flow import paths
from kflow_jax.run import experiment
from kflow_jax.run import field as field_lib

import perturb


def _run(arg="runlocal", **overrides):
  shape = overrides.pop("shape", None)
  c = digits.get_config(arg)
  c.update_from_flattened_dict(overrides)
  return experiment.setup(c, None, "tool", devices=jax.devices()[:1],
                          shape=shape)


def _params(run):
  """Initial params off adaLN-Zero's zeros: a generic function of x."""
  return perturb.perturbed(run.init_state().params, 1, 0.1)


def test_every_example_draws_from_its_own_key_only():
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  labels = jnp.arange(6, dtype=jnp.int32)
  draw_t = lambda r: jax.random.uniform(r, ())
  kw = dict(label_dropout=0.5, num_classes=10)
  x0, t, y = losses.draw_examples(keys, (4, 4, 1), draw_t, labels, **kw)
  parts = [losses.draw_examples(keys[a:b], (4, 4, 1), draw_t, labels[a:b],
                                **kw) for a, b in ((0, 1), (1, 4), (4, 6))]
  for got, want in zip((x0, t, y), zip(*parts)):
    np.testing.assert_array_equal(got, jnp.concatenate(want))
  assert set(np.asarray(y).tolist()) - set(range(6)) <= {10}
  # Unconditional: no labels, whatever is passed.
  assert losses.draw_examples(keys, (2,), draw_t)[2] is None


@pytest.mark.slow
def test_full_and_scale_adaptive_runs_give_the_same_field_api():
  full = _run("transform=wavelet,runlocal")
  ad = _run("transform=wavelet,runlocal", **{"model.scale_adaptive": True})
  assert (full.field.plan, full.field.tag, full.field.record) == (None, "",
                                                                 {})
  assert ad.field.tag == "_adaptive" and ad.field.record == {
      "scale_adaptive": True}
  assert ad.field.band_grids == ("8x8", "16x16")
  params = _params(full)
  x = jax.random.normal(jax.random.PRNGKey(2), (2,) + tuple(full.info.shape))
  keys = jax.random.split(jax.random.PRNGKey(3), 16)
  batch = {"image": jax.random.normal(jax.random.PRNGKey(4), (16,) + tuple(
      full.info.shape))}
  for run in (full, ad):
    f = run.field
    # Jitted: the sharded loss run op by op takes minutes on the CPU.
    loss, aux, grads = jax.jit(f.loss_and_grad)(params, batch, keys)
    loss_only, aux_only, none = jax.jit(f.loss)(params, batch, keys)
    assert none is None and np.isfinite(float(loss))
    np.testing.assert_allclose(float(loss_only), float(loss), rtol=1e-6)
    assert len(aux["band_count"]) == 2 and jax.tree.structure(
        grads) == jax.tree.structure(params)
    for t in (0.2, 0.8):  # one time per call: the adaptive field's contract
      tb = jnp.full((2,), t)
      v = f.velocity(params, None, run.spec)(x, tb)
      assert v.shape == x.shape and np.all(np.isfinite(np.asarray(v)))
      assert f.network(params)(x, tb, None).shape == x.shape
    out, stats = jax.jit(f.sampler(run.spec))(params, x, None)
    assert out.shape == x.shape and int(stats["nfe"]) == 4
  # Band s's network is zero outside band s by construction.
  tr = ad.path.transform
  v = ad.field.velocity(params, None, ad.spec)(x, jnp.full((2,), 0.2))
  c = np.abs(np.asarray(tr.forward(v)))
  assert c[:, np.asarray(ad.path.band) != 0].max() < 1e-5 * c.max()


@pytest.mark.slow
@pytest.mark.parametrize("adaptive", [False, True])
def test_unrolled_sampler_takes_the_same_steps(adaptive):
  run = _run("transform=wavelet,runlocal",
             **{"model.scale_adaptive": adaptive})
  params = _params(run)
  x0 = jax.random.normal(jax.random.PRNGKey(5), (2,) + tuple(run.info.shape))
  rolled = jax.jit(run.field.sampler(run.spec))
  unrolled = jax.jit(run.field.sampler(run.spec, unroll=True))
  a, sa = rolled(params, x0, None)
  b, sb = unrolled(params, x0, None)
  np.testing.assert_allclose(a, b, atol=1e-5)
  assert int(sa["nfe"]) == int(sb["nfe"])
  # XLA counts a loop body once: only the unrolled program counts every
  # step's network call.
  cost = lambda fn: float(fn.lower(params, x0, None).compile()
                          .cost_analysis()["flops"])
  assert cost(unrolled) > 1.5 * cost(rolled)


@pytest.mark.slow
def test_setup_builds_a_run_for_another_input_shape():
  run = _run(**{"shape": (32, 32, 3)})
  assert tuple(run.info.shape) == (32, 32, 3)
  assert tuple(run.path.transform.shape) == (32, 32, 3)
  assert run.abstract_state.params is not None
  keys = jax.random.split(jax.random.PRNGKey(0), 16)
  loss, _, _ = jax.jit(run.field.loss)(  # op by op: minutes on the CPU
      run.init_state().params, {"image": jnp.zeros((16, 32, 32, 3))}, keys)
  assert np.isfinite(float(loss))
  c = digits.get_config("runlocal")
  with pytest.raises(ValueError, match="only mode='tool'"):
    experiment.setup(c, None, "train", shape=(32, 32, 3))
  with pytest.raises(ValueError, match="measured on the data set"):
    c.path.gamma = 1.0
    experiment.setup(c, None, "tool", shape=(32, 32, 3))
  with pytest.raises(ValueError, match=r"\(H, W, C\)"):
    experiment.setup(digits.get_config("runlocal"), None, "tool",
                     shape=(32, 32))


def test_band_io_and_loss_options_are_read_once_and_checked():
  run = _run()  # digits K-Flow: both band I/O options on
  assert run.field.band_io == field_lib.BandIO(True, True)
  with pytest.raises(ValueError, match="band_weighting and .*band_loss_"
                     "weights both"):
    _run(**{"loss.band_weighting": "target_scale",
            "loss.band_loss_weights": (1.0, 1.0)})
  opts = field_lib.read_loss_options(run.config, run.path, False)
  assert opts.t_sampling == "band_logit_normal"
  assert set(opts.t_options) == {"band_weights", "logit_mean", "logit_std"}
  # The per-example t of the full-resolution loss is the run's law.
  t = paths.sample_t(jax.random.PRNGKey(0), 1, run.path, opts.t_sampling,
                     **opts.t_options)
  assert t.shape == (1,)
