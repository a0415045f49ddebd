"""sharding: mesh, batch checks, and the shard_map'd loss/grad being
invariant to the number of devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax.infra import sharding


def _per_example(params, example, key):
  noise = jax.random.normal(key, example["x"].shape)
  pred = example["x"] @ params["w"] + params["b"]
  err = (pred - example["y"] - 0.1 * noise[0]) ** 2
  return err, {"loss": err, "sq_sum": err, "one_count": jnp.ones(())}


def _run(devices):
  mesh = sharding.make_mesh(1, devices)
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
            "b": jnp.float32(0.5)}
  local = {"x": rng.normal(size=(16, 3)).astype(np.float32),
           "y": rng.normal(size=(16,)).astype(np.float32)}
  batch = sharding.global_batch(mesh, local)
  keys = jax.random.split(jax.random.PRNGKey(1), 16)
  fn = jax.jit(sharding.sharded_loss_and_grad(
      sharding.per_example(_per_example), mesh))
  loss, aux, grads = fn(params, batch, keys)
  return jax.device_get((loss, aux, grads)), (params, local, keys)


def test_loss_and_grad_match_unsharded_and_device_counts():
  (l8, a8, g8), (params, local, keys) = _run(jax.devices()[:8])
  (l1, a1, g1), _ = _run(jax.devices()[:1])
  # Reference without shard_map.
  def ref(p):
    losses, _ = jax.vmap(lambda ex, k: _per_example(p, ex, k))(local, keys)
    return jnp.mean(losses)
  lr, gr = jax.value_and_grad(ref)(params)
  for loss, grads in ((l8, g8), (l1, g1)):
    np.testing.assert_allclose(loss, lr, rtol=1e-5)
    np.testing.assert_allclose(grads["w"], gr["w"], rtol=1e-5)
  assert float(a8["one_count"]) == 16.0 and float(a1["one_count"]) == 16.0
  np.testing.assert_allclose(a8["sq_sum"], 16 * lr, rtol=1e-5)


def test_mesh_and_batch_errors():
  mesh = sharding.make_mesh(2, jax.devices()[:8])
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  assert sharding.check_batch_size(16, mesh) == 16
  with pytest.raises(ValueError, match="not divisible by the number of "
                     "devices"):
    sharding.check_batch_size(12, mesh)
  with pytest.raises(ValueError, match="fsdp"):
    sharding.make_mesh(3, jax.devices()[:8])
  assert sharding.must_block(mesh) == (jax.default_backend() == "cpu")
  assert not sharding.must_block(sharding.make_mesh(1, jax.devices()[:1]))


def test_batch_report_warns_only_when_devices_differ_from_recipe():
  line, warning = sharding.batch_report(1280, 8, recipe_devices=8)
  assert "160 examples per device" in line and warning is None
  assert sharding.batch_report(64, 2)[1] is None  # no recipe count given
  line, warning = sharding.batch_report(1280, 64, recipe_devices=8)
  assert "20 examples per device" in line
  assert "8 devices (160 examples per device)" in warning
  assert "64 devices each gets 20" in warning
