"""config.path.hide_input / project_output (paths.band_network): the
network sees only the bands started at t and moves only those active at t,
in the loss and in the sampler alike, checked against the masks built here;
the refusals; and the command a user types."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from kflow_jax.run import experiment
from kflow_jax.run import field as field_lib
from kflow_jax.flow import losses
from kflow_jax.flow import paths
from kflow_jax.flow import sampling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(project=True, arg="runlocal", hide=False, **overrides):
  c = digits.get_config(arg)
  c.path.project_output = project
  c.path.hide_input = hide
  c.update_from_flattened_dict(overrides)
  return experiment.setup(c, None, "tool", devices=jax.devices()[:1])


def _params(run):
  """The initial params moved off adaLN-Zero's zeros, so the output is a
  generic function of x in every band."""
  params = run.init_state().params
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(tree, [
      np.asarray(p) + 0.1 * np.asarray(jax.random.normal(k, p.shape))
      for p, k in zip(leaves, keys)])


def _inputs(run, n=4):
  x = jax.random.normal(jax.random.PRNGKey(2), (n,) + tuple(run.info.shape))
  t = jnp.asarray([0.1, 0.3, 0.6, 0.9][:n], jnp.float32)
  return x, t


@pytest.mark.slow
def test_output_moves_only_the_bands_active_at_t():
  run, plain = _run(True), _run(False)
  assert run.field.projects(run.spec)
  assert not plain.field.projects(plain.spec)
  params = _params(run)
  x, t = _inputs(run)
  tr = run.path.transform
  inactive = ~np.asarray(paths.active_mask(run.path, t))
  v = run.field.network(params)(x, t, None)
  raw = plain.field.network(params)(x, t, None)
  c, c_raw = np.asarray(tr.forward(v)), np.asarray(tr.forward(raw))
  # Both bands of the 2-band path occur among the 4 times.
  assert inactive.any() and (~inactive).any()
  assert np.abs(c[inactive]).max() < 1e-5
  assert np.abs(c_raw[inactive]).mean() > 1e-2
  # In the active bands the projected output is the network's own.
  np.testing.assert_allclose(c[~inactive], c_raw[~inactive], atol=1e-5)


@pytest.mark.slow
def test_loss_uses_the_projected_output():
  run = _run(True)
  params = _params(run)
  x1, _ = _inputs(run)
  keys = jax.random.split(jax.random.PRNGKey(5), x1.shape[0])
  # Jitted: the sharded loss run op by op takes a minute on the CPU.
  loss, _, grads = jax.jit(run.field.loss)(params, {"image": x1}, keys)
  assert grads is None

  # The same draws as the field's loss, the projection written out here.
  def draw(key):
    k_loss, _ = jax.random.split(key)
    r_noise, r_t = jax.random.split(k_loss)
    x0 = jax.random.normal(r_noise, x1.shape[1:], jnp.float32)
    return x0, paths.sample_t(r_t, 1, run.path,
                              run.config.loss.t_sampling)[0]
  x0, t = jax.vmap(draw)(keys)
  tr = run.path.transform

  def projected(x, tt, y):
    v = run.model.apply({"params": params}, x, tt, y, train=True)
    mask = paths.active_mask(run.path, tt)
    return tr.inverse(jnp.where(mask, tr.forward(v), 0.0))
  want, _ = losses.kflow_loss(projected, run.path, x1, keys[0], x0=x0, t=t)
  unprojected, _, _ = jax.jit(_run(False).field.loss)(params,
                                                      {"image": x1}, keys)
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  assert abs(float(unprojected) - float(loss)) > 1e-3 * float(loss)


@pytest.mark.slow
def test_hidden_input_bands_do_not_reach_the_network():
  run = _run(False, hide=True)
  params = _params(run)
  x, t = _inputs(run)
  tr = run.path.transform
  unstarted = np.asarray(run.path.start)[None] > np.asarray(t)[:, None, None,
                                                               None]
  assert unstarted.any() and (~unstarted).any()
  # hide_unstarted: exactly the unstarted coefficients become 0.
  c = np.asarray(tr.forward(paths.hide_unstarted(run.path, x, t)))
  np.testing.assert_allclose(c[~unstarted],
                             np.asarray(tr.forward(x))[~unstarted], atol=1e-5)
  assert np.abs(c[unstarted]).max() < 1e-5
  # Changing the unstarted bands of x changes nothing, in training's and in
  # the sampler's network alike; without hide_input it does.
  noise = jax.random.normal(jax.random.PRNGKey(7), x.shape)
  x2 = x + tr.inverse(jnp.where(unstarted, tr.forward(noise), 0.0))
  for hidden in (True, False):
    r = run if hidden else _run(False)
    fns = [r.field.network(params),
           lambda xx, tt, y, r=r: r.field.velocity(params, None, r.spec)(
               xx, tt)]
    for fn in fns:
      gap = float(jnp.max(jnp.abs(fn(x, t, None) - fn(x2, t, None))))
      assert (gap < 1e-5) if hidden else (gap > 1e-3), (hidden, gap)


@pytest.mark.slow
def test_sampler_runs_the_network_as_trained():
  run = _run(True, hide=True)
  params = _params(run)
  x0, _ = _inputs(run)
  sampler = run.field.sampler(run.spec)
  got = np.asarray(sampler(params, x0, None, num_steps=6)[0])
  net = run.field.network(params)
  want = np.asarray(sampling.sample(lambda x, t: net(x, t, None), run.path,
                                    x0, solver="euler", num_steps=6,
                                    project=True))
  np.testing.assert_allclose(got, want, atol=1e-5)
  other = _run(False)
  plain = np.asarray(other.field.sampler(other.spec)(params, x0, None,
                                                     num_steps=6)[0])
  assert np.abs(plain - got).max() > 1e-3


def test_sampler_projects_every_velocity():
  # The run's training choice, not a sampling option: not in the tag.
  run = _run(True)
  assert run.field.projects(run.spec) and not run.spec.project
  assert run.field.band_io == field_lib.BandIO(False, True)
  other = _run(False)
  assert not other.field.projects(other.spec)
  assert _run(False, hide=True).field.band_io.hide_input
  # The network's band I/O belongs to how it was trained, not to the
  # sampling spec.
  assert not hasattr(run.spec, "project_output")


def test_hiding_bands_of_a_non_orthonormal_transform_is_refused():
  with pytest.raises(ValueError, match="not orthonormal.*hide_input=False"):
    _run(False, arg="transform=wavelet,runlocal", hide=True,
         **{"transform.wavelet": "bior2.2"})


def test_scale_adaptive_run_does_not_use_them():
  # The digits K-Flow default sets both; scale_adaptive on top must work.
  run = _run(True, arg="transform=wavelet,runlocal", hide=True,
             **{"model.scale_adaptive": True})
  assert run.field.plan is not None
  assert run.field.band_io == field_lib.BandIO()
  assert not run.field.projects(run.spec)


@pytest.mark.slow
def test_command_line_trains_and_samples_projected(tmp_path):
  wd = str(tmp_path / "run")
  base = [sys.executable, "-m", "kflow_jax.main",
          "--config=configs/digits.py:runlocal", f"--workdir={wd}",
          "--config.path.hide_input=True",
          "--config.path.project_output=True"]
  env = dict(os.environ, PYTHONPATH=REPO)
  for extra in ([], ["--mode=sample"]):
    p = subprocess.run(base + extra, cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
  sets = os.listdir(os.path.join(wd, "sample_mode"))
  assert len(sets) == 1 and not sets[0].endswith("_project"), sets
  # A relaunch with them off is a different run: refused, not mixed.
  p = subprocess.run(base[:-2] + ["--mode=sample",
                                  "--config.path.hide_input=False",
                                  "--config.path.project_output=False"],
                     cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode != 0, p.stderr[-2000:]
  assert "hide_input" in p.stderr and "project_output" in p.stderr
