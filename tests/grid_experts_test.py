"""Per-grid experts (kflow_jax/models/grid_experts.py, config.model.
per_grid_experts): each coarse grid of a scale-adaptive run gets its own
backbone. With every expert a copy of one backbone the run is the shared
backbone's run (loss, and the shared gradient is the experts' sum); with
different experts band s runs its own grid's expert and no other."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from flax import linen as nn

from kflow_jax import models
from kflow_jax.data import input_pipeline
from kflow_jax.models import grid_experts
from kflow_jax.models import layers
from kflow_jax.run import experiment

import perturb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = jax.random.PRNGKey(0)


def _run(**overrides):
  c = digits.get_config("transform=wavelet,runlocal")
  c.update_from_flattened_dict(dict({"model.scale_adaptive": True},
                                    **overrides))
  return experiment.setup(c, None, "tool", devices=jax.devices()[:1])


class _Toy(nn.Module):
  """A backbone with the contract and nothing else: compiles in
  milliseconds (the DiT at every grid is the slow tier's, below)."""

  @nn.compact
  def __call__(self, x, t, y=None, train=False, frame=None):
    del train
    f = 1.0 if frame is None else float(frame.factor)
    h = nn.Dense(4)(x) * (1.0 + t[:, None, None, None])
    if y is not None:
      h = h + nn.Embed(10, 4)(y)[:, None, None, :]
    return nn.Dense(x.shape[-1])(jnp.tanh(h)) * f


def test_copied_experts_are_the_backbone_and_sum_its_gradient():
  """Experts that copy one backbone compute it at each grid, and one set
  of weights used at both grids has the sum of the copies' gradients;
  different experts: each grid runs its own."""
  net = _Toy()
  g = grid_experts.GridExperts(experts=(net, net.clone()), factors=(2, 1))
  xf = jax.random.normal(jax.random.PRNGKey(4), (2, 16, 16, 1))
  xc, frames = xf[:, ::2, ::2], (layers.Frame(2, 0.5), None)
  t, y = jnp.asarray([0.3, 0.6]), jnp.asarray([3, 7], jnp.int32)
  params = jax.jit(net.init)(KEY, xf, t, y)["params"]
  gp = {"experts_0": params, "experts_1": params}
  # Init makes every expert, whatever grid the init input is on.
  assert jax.tree.structure(jax.jit(g.init)(KEY, xf, t, y)["params"]) == (
      jax.tree.structure(gp))

  # Twice the parameters; an example uses one grid's copy.
  one = models.count_params(params).total
  assert models.count_params(gp, g) == (2 * one, one)

  def loss(module, p):
    return sum(jnp.sum(module.apply({"params": p}, x, t, y, frame=f) ** 2)
               for x, f in zip((xc, xf), frames))

  # Jitted: eagerly, every small op compiles on its own (seconds).
  l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(net, p)))(params)
  l2, g2 = jax.jit(jax.value_and_grad(lambda p: loss(g, p)))(gp)
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  for a, b, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g2["experts_0"]),
                     jax.tree.leaves(g2["experts_1"])):
    np.testing.assert_allclose(b + c, a, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(b)).max() > 0 and np.abs(
        np.asarray(c)).max() > 0
  other = jax.jit(net.init)(jax.random.PRNGKey(9), xf, t, y)["params"]
  mixed = {"experts_0": other, "experts_1": params}
  for x, f, own in ((xc, frames[0], other), (xf, None, params)):
    np.testing.assert_array_equal(
        jax.jit(lambda p, x: g.apply({"params": p}, x, t, y, frame=f))(
            mixed, x),
        jax.jit(lambda p, x: net.apply({"params": p}, x, t, y, frame=f))(
            own, x))


@pytest.mark.slow
def test_copies_of_one_backbone_are_that_backbone():
  shared = _run()
  experts = _run(**{"model.per_grid_experts": True})
  assert experts.model.factors == (2, 1)  # 8x8 and 16x16 of 16x16
  params = perturb.perturbed(shared.init_state().params, 1, 0.1)
  copied = {"experts_0": params, "experts_1": params}
  # The experts' tree is the backbone's, once per grid.
  got = jax.tree.structure(experts.init_state().params)
  assert got == jax.tree.structure(copied)
  batch = next(input_pipeline.create(shared.config.input,
                                     global_batch_size=8, seed=0))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  keys = jax.random.split(jax.random.PRNGKey(3), 8)
  l1, _, g1 = jax.jit(shared.field.loss_and_grad)(params, batch, keys)
  l2, _, g2 = jax.jit(experts.field.loss_and_grad)(copied, batch, keys)
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  # One set of weights used at two grids: its gradient is the sum of the
  # two experts' gradients.
  for a, b, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g2["experts_0"]),
                     jax.tree.leaves(g2["experts_1"])):
    np.testing.assert_allclose(b + c, a, rtol=1e-4, atol=1e-6)
  assert any(np.abs(np.asarray(b)).max() > 0 and np.abs(
      np.asarray(c)).max() > 0 for b, c in zip(
          jax.tree.leaves(g2["experts_0"]),
          jax.tree.leaves(g2["experts_1"])))


@pytest.mark.slow
def test_each_band_runs_its_own_grids_expert():
  shared = _run()
  experts = _run(**{"model.per_grid_experts": True})
  p0 = perturb.perturbed(shared.init_state().params, 1, 0.1)
  p1 = perturb.perturbed(shared.init_state().params, 2, 0.1)
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 16, 16, 1))
  y = jnp.asarray([3, 7], jnp.int32)
  mixed = experts.field.network({"experts_0": p0, "experts_1": p1})
  for t, own, other in ((0.2, p0, p1), (0.8, p1, p0)):
    tt = jnp.full((2,), t)
    v = np.asarray(mixed(x, tt, y))
    np.testing.assert_allclose(
        v, shared.field.network(own)(x, tt, y), atol=1e-6)
    assert np.abs(v - np.asarray(shared.field.network(other)(x, tt, y))
                  ).max() > 1e-3


def test_grid_experts_refuse_what_they_cannot_serve():
  with pytest.raises(ValueError, match="no coarse grids; set "
                     "config.model.scale_adaptive=True"):
    _run(**{"model.scale_adaptive": False, "model.per_grid_experts": True})
  net = _Toy()
  with pytest.raises(ValueError, match="factors \\(2, 2\\) repeat"):
    grid_experts.GridExperts(experts=(net, net.clone()), factors=(2, 2))
  with pytest.raises(ValueError, match="one expert per grid factor"):
    grid_experts.GridExperts(experts=(net,), factors=(2, 1))
  g = grid_experts.GridExperts(experts=(net, net.clone()), factors=(2, 1))
  assert g.expert_index(None) == 1 and g.expert_index(layers.Frame(2)) == 0
  with pytest.raises(ValueError, match="not for an input of factor 4"):
    g.expert_index(layers.Frame(4, 1.5))


@pytest.mark.slow
def test_command_trains_and_samples_with_grid_experts(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  wd = str(tmp_path / "run")
  for mode in ("train", "sample"):
    p = subprocess.run(
        [sys.executable, "-m", "kflow_jax.main",
         "--config=configs/digits.py:transform=wavelet,runlocal",
         f"--workdir={wd}", f"--mode={mode}",
         "--config.model.scale_adaptive=True",
         "--config.model.per_grid_experts=True",
         "--config.total_steps=4", "--config.sample.at_end=false"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
  (tag,) = os.listdir(os.path.join(wd, "sample_mode"))
  assert tag.endswith("_adaptive")
