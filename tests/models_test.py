"""Tests for kflow_jax.models: shapes, adaLN-Zero, counts, MoE routing, FSDP.

Forward passes use the tiny `mu` sizes on 8x8 inputs; the standard sizes are
only traced with jax.eval_shape (nothing allocated). Keys use the "rbg" PRNG:
on this CPU, compiling threefry for every parameter of an init dominates the
test time (10 draws ~7-25 s), and the models do not care which PRNG made
their weights.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax import kamp
from kflow_jax import models

TAU = (0.0, 0.25, 0.5, 1.0)
TINY = {
    "dit": dict(size="mu", patch_size=2),
    "moe_dit": dict(size="mu", patch_size=2, tau=TAU),
    "unet": dict(size="mu"),
    "mlp": dict(size="mu"),
}


def key(i=0):
  return jax.random.key(i, impl="rbg")


def inputs(b=4, h=8, w=8, c=3, num_classes=5):
  x = jax.random.normal(jax.random.key(1), (b, h, w, c))
  t = jnp.array([0.1, 0.6, 0.3, 0.9, 0.0, 1.0, 0.5, 0.2][:b], jnp.float32)
  y = jnp.arange(b, dtype=jnp.int32) % num_classes if num_classes else None
  return x, t, y


def random_like(tree, scale=0.05, seed=3):
  """Random weights of the shapes in `tree` (numpy: no PRNG compiles)."""
  rs = np.random.RandomState(seed)
  return jax.tree.map(
      lambda a: jnp.asarray(scale * rs.standard_normal(a.shape), a.dtype),
      tree)


def perturbed(variables, scale=0.05, seed=3):
  """Adds noise so zero-initialized outputs become informative."""
  return jax.tree.map(lambda a, n: a + n, variables,
                      random_like(variables, scale, seed))


@functools.lru_cache(maxsize=None)
def built(name, c=3, num_classes=5, **extra):
  """(module, random unboxed variables, x, t, y), cached per config.

  Weights come from numpy at the shapes jax.eval_shape(init) gives, so only
  the tests that check the real init (zero output, sharded init) compile it.
  """
  model = models.get(name, num_classes=num_classes, **TINY[name], **extra)
  x, t, y = inputs(c=c, num_classes=num_classes)
  abstract = nn.meta.unbox(jax.eval_shape(model.init, key(), x, t, y))
  return model, random_like(abstract), x, t, y


@functools.lru_cache(maxsize=None)
def jitted(model):
  """One jitted apply per module config, so tests share its compile."""
  return jax.jit(model.apply)


def real_init(name, **extra):
  model = models.get(name, num_classes=5, **TINY[name], **extra)
  x, t, y = inputs()
  return model, nn.meta.unbox(jax.jit(model.init)(key(), x, t, y)), x, t, y


# ---------------------------------------------------------------- shapes ---


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_shape(name):
  model, variables, x, t, y = built(name)
  out = jitted(model)(variables, x, t, y)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert np.all(np.isfinite(out)) and np.abs(out).max() > 0


SHAPES = ([(n, dict(TINY[n], num_classes=10)) for n in sorted(TINY)]
          + [(n, dict(TINY[n], size="ti")) for n in sorted(TINY)]
          + [("dit", dict(size=s, patch_size=2, num_classes=1000))
             for s in ("S", "B", "L", "XL")]
          + [("dit", dict(size="S", patch_size=p)) for p in (4, 8)]
          + [("moe_dit", dict(size=s, tau=TAU)) for s in ("S", "L")]
          + [("unet", dict(size="cifar")), ("unet", dict(size="adm64")),
             ("mlp", dict(size="S")), ("mlp", dict(size="B"))])


# The mu and ti sizes in the fast tier, the large ones in -m slow.
@pytest.mark.parametrize("name,kw", [
    pytest.param(n, kw, marks=() if kw.get("size") in ("mu", "ti")
                 else pytest.mark.slow) for n, kw in SHAPES],
    ids=lambda v: str(v))
def test_output_shape_all_sizes_by_eval_shape(name, kw):
  model = models.get(name, **kw)
  for c in (1, 3, 4):
    x = jax.ShapeDtypeStruct((2, 32, 32, c), jnp.float32)
    t = jax.ShapeDtypeStruct((2,), jnp.float32)
    y = jax.ShapeDtypeStruct((2,), jnp.int32)
    out = jax.eval_shape(lambda x, t, y: model.init_with_output(
        key(), x, t, y)[0], x, t, y)
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_mlp_takes_flat_2d_points():
  model = models.get("mlp", size="mu")
  x = jax.random.normal(key(), (16, 2))
  t = jnp.linspace(0, 1, 16)
  v = jax.jit(model.init)(key(), x, t, None)
  assert jitted(model)(v, x, t, None).shape == (16, 2)


@pytest.mark.slow
def test_resolution_agnostic_dit_and_unet():
  for name, extra in (("dit", {}), ("dit", {"pos_embed": "learned"}),
                      ("unet", {})):
    model, variables, *_ = built(name, **extra)
    if extra:  # Stored for the init grid (4x4 tokens), resized per input.
      assert variables["params"]["pos_embed"].shape == (4, 4, 32)
    x, t, y = inputs(h=16, w=8)
    out = jitted(model)(variables, x, t, y)
    assert out.shape == x.shape and np.all(np.isfinite(out))


# ------------------------------------------------------------ init, CFG ---


# The DiT fast; the MoE and the U-Net in -m slow.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "dit" else pytest.mark.slow)
    for n in ("dit", "moe_dit", "unet")])
def test_zero_output_at_init(name):
  model, variables, x, t, y = real_init(name)
  np.testing.assert_array_equal(jitted(model)(variables, x, t, y), 0.0)


@pytest.mark.parametrize("name", sorted(TINY))
def test_null_class_is_y_none_and_differs_from_labels(name):
  model, variables, x, t, y = built(name)
  v = variables
  null = jnp.full_like(y, 5)
  out_none = jitted(model)(v, x, t, None)
  out_null = jitted(model)(v, x, t, null)
  out_y = jitted(model)(v, x, t, y)
  assert out_none.shape == out_null.shape == out_y.shape == x.shape
  np.testing.assert_allclose(out_none, out_null, atol=1e-6)
  assert np.abs(out_y - out_null).max() > 1e-4


def test_unconditional_model_ignores_y_and_tau_from_numpy():
  model, variables, x, t, _ = built("mlp", num_classes=0)
  assert "y_embedder" not in variables["params"]
  np.testing.assert_array_equal(
      jitted(model)(variables, x, t, None),
      jitted(model)(variables, x, t, jnp.array([3, 1, 4, 1], jnp.int32)))
  moe = models.get("moe_dit", size="mu", tau=np.array([0.0, 0.3, 1.0]))
  assert moe.tau == (0.0, 0.3, 1.0) and moe.experts == 2


def test_drop_labels_rate_and_edge_cases():
  y = jnp.arange(40000, dtype=jnp.int32) % 10
  for p in (0.1, 0.3):
    d = models.drop_labels(key(7), y, p, 10)
    frac = float(jnp.mean(d == 10))
    # 5 sigma of a binomial proportion over 40000 draws.
    assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / y.size), (p, frac)
    kept = d != 10
    np.testing.assert_array_equal(d[kept], y[kept])
    assert d.dtype == jnp.int32
  np.testing.assert_array_equal(models.drop_labels(key(), y, 0.0, 10), y)
  assert bool(jnp.all(models.drop_labels(key(), y, 1.0, 10) == 10))
  assert models.drop_labels(key(), y, 0.5, 0) is y
  assert models.drop_labels(key(), None, 0.5, 10) is None
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    models.drop_labels(key(), y, 1.5, 10)


# ---------------------------------------------------- counts and FLOPs ---


def _abstract(model, shape=(1, 32, 32, 4)):
  return jax.eval_shape(model.init, key(), jnp.ones(shape),
                        jnp.ones(shape[:1]), jnp.ones(shape[:1], jnp.int32))


# S and XL fast (the smallest and the paper's headline model), B and L in
# -m slow: abstract initialisation of a large DiT still takes seconds.
@pytest.mark.parametrize("size,paper", [
    ("S", 33e6), pytest.param("B", 130e6, marks=pytest.mark.slow),
    pytest.param("L", 458e6, marks=pytest.mark.slow), ("XL", 675e6)])
def test_dit_param_counts_match_paper(size, paper):
  # DiT paper (Table 4): learned-sigma outputs (8 channels) and a fixed
  # sin-cos position table. We predict 4 channels only (no sigma for flow
  # matching), 4 * p * p * hidden fewer weights: < 0.01 % of the count.
  model = models.get("dit", size=size, patch_size=2, num_classes=1000)
  count = models.count_params(_abstract(model))
  assert count.total == count.active
  assert abs(count.total / paper - 1) < 0.02, (size, count.total)


@pytest.mark.slow
def test_analytic_flops_match_paper_and_xla():
  xl = models.get("dit", size="XL", patch_size=2, num_classes=1000)
  # DiT paper: DiT-XL/2 at 256 px (latent 32x32x4) is 118.6 Gflops (MACs).
  assert abs(xl.analytic_flops((1, 32, 32, 4)) / 2e9 - 118.6) < 0.5
  model, variables, x, t, y = built("dit")
  xla = models.flops(model, variables, x, t, y)
  # XLA also counts norms, softmax and adds: a bit above the matmul count.
  ratio = xla / model.analytic_flops(x.shape)
  assert 1.0 <= ratio < 1.6, ratio
  assert models.flops(model, variables, x, t, y, backward=True) > 2 * xla


def test_moe_active_and_total_params():
  dense = models.get("dit", size="S", patch_size=2, num_classes=1000)
  moe = models.get("moe_dit", size="S", patch_size=2, num_classes=1000,
                   tau=TAU)
  d, m = models.count_params(_abstract(dense)), models.count_params(
      _abstract(moe))
  mlp = 2 * 384 * 1536 + 1536 + 384  # one expert's MLP in one block
  assert m.active == d.total  # one expert of three per block is used
  assert m.total == d.total + 12 * 2 * mlp
  # Unboxed params are recognised too (by the `moe` scope).
  assert models.count_params(nn.meta.unbox(_abstract(moe))) == m
  soft = models.get("moe_dit", size="S", num_classes=1000, tau=TAU,
                    routing="soft")
  s = models.count_params(_abstract(soft), soft)
  assert s.active == s.total == m.total + 12 * 9  # + 3x3 router per block
  assert soft.analytic_flops((1, 32, 32, 4)) > moe.analytic_flops(
      (1, 32, 32, 4)) == dense.analytic_flops((1, 32, 32, 4))


# ------------------------------------------------------------ MoE routing ---


def test_moe_band_of_time():
  from kflow_jax.models import moe
  t = jnp.array([0.0, 0.1, 0.25, 0.4, 0.5, 0.99, 1.0])
  np.testing.assert_array_equal(kamp.band_of_time(t, TAU), [0, 0, 1, 1, 2, 2, 2])


@pytest.mark.parametrize("expert", [0, 1, 2])
def test_moe_routes_each_band_to_its_expert(expert):
  model, variables, x, t, y = built("moe_dit")
  bands = np.asarray([0, 2, 1, 2])  # of t = 0.1, 0.6, 0.3, 0.9 under TAU
  v = variables
  out = jitted(model)(v, x, t, y)
  moe_p = v["params"]["blocks_0"]["moe"]
  changed = jax.tree.map(lambda a: a, v)
  changed["params"]["blocks_0"]["moe"] = {
      k: a.at[expert].add(0.5) for k, a in moe_p.items()}
  diff = np.abs(jitted(model)(changed, x, t, y) - out).reshape(4, -1).max(1)
  assert np.all(diff[bands == expert] > 1e-3), diff
  np.testing.assert_array_equal(diff[bands != expert], 0.0)


def test_moe_hard_routing_matches_dense_reference():
  """ragged_dot grouping equals running each example through its expert."""
  model, variables, x, t, y = built("moe_dit")
  from kflow_jax.models import moe
  mlp = moe.ExpertMlp(32, 128, 3, 3, "hard")
  p = variables["params"]["blocks_0"]["moe"]
  h = jax.random.normal(key(4), (4, 16, 32))
  band = jnp.array([2, 0, 2, 1])
  got = mlp.apply({"params": p}, h, band)
  ref = []
  for i in range(4):
    e = int(band[i])
    z = nn.gelu(h[i] @ p["w1"][e] + p["b1"][e], approximate=True)
    ref.append(z @ p["w2"][e] + p["b2"][e])
  np.testing.assert_allclose(got, jnp.stack(ref), atol=1e-5)


@pytest.mark.slow
def test_moe_soft_router_learns_and_fewer_experts_share():
  from kflow_jax.models import moe
  mlp = moe.ExpertMlp(32, 64, 3, 3, "soft")
  h = jax.random.normal(key(4), (4, 5, 32))
  band = jnp.array([2, 0, 2, 1])
  p = mlp.init(key(), h, band)["params"]
  # Starts near the hard assignment: softmax(4 * one-hot).
  gate = jax.nn.softmax(nn.meta.unbox(p["router"]), -1)
  np.testing.assert_allclose(np.diag(gate), np.exp(4) / (np.exp(4) + 2),
                             rtol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(mlp.apply({"params": p}, h, band) ** 2))(
      nn.meta.unbox(p))
  assert np.abs(grads["router"]).max() > 0
  model, variables, x, t, y = built("moe_dit", num_experts=2)
  assert variables["params"]["blocks_0"]["moe"]["w1"].shape[0] == 2


# ------------------------------------------------- precision and remat ---


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "mlp" else pytest.mark.slow)
    for n in sorted(TINY)])  # mlp fast, the rest in -m slow
def test_bf16_compute_finite_outputs_and_grads(name):
  model, variables, x, t, y = built(name, dtype="bfloat16")
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))

  def loss(v):
    out = model.apply(v, x, t, y)
    return jnp.mean((out - x) ** 2), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables)
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
  leaves = jax.tree.leaves(grads)
  assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  # bf16 really is used: the result differs from the fp32 model's.
  fp32 = built(name)[0]
  assert np.abs(out - jitted(fp32)(variables, x, t, y)).max() > 0


@pytest.mark.slow
def test_remat_same_values_and_grads():
  model, variables, x, t, y = built("dit")
  remat = models.get("dit", num_classes=5, remat=True, **TINY["dit"])
  loss = lambda m: lambda v: jnp.sum(m.apply(v, x, t, y) ** 2)
  g0 = jax.jit(jax.grad(loss(model)))(variables)
  g1 = jax.jit(jax.grad(loss(remat)))(variables)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # Remat keeps the parameter tree, so checkpoints load either way.
  for name in ("unet", "moe_dit"):
    plain = built(name)[1]
    m = models.get(name, num_classes=5, remat=True, **TINY[name])
    abstract = jax.eval_shape(m.init, key(), x, t, y)
    assert (jax.tree.structure(nn.meta.unbox(abstract)) ==
            jax.tree.structure(plain))


# ------------------------------------------------------------- sharding ---


@pytest.mark.parametrize("name", [
    "dit", pytest.param("moe_dit", marks=pytest.mark.slow)])
def test_fsdp_mesh_shardings_init_and_apply(name):
  model = built(name)[0]
  x, t, y = inputs(b=8)
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  abstract = jax.eval_shape(model.init, key(), x, t, y)
  boxed = jax.tree.leaves(abstract, is_leaf=lambda l: isinstance(
      l, nn.Partitioned))
  assert all(isinstance(l, nn.Partitioned) for l in boxed)
  shardings = models.param_shardings(abstract, mesh)
  batch = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  init = jax.jit(lambda r: nn.meta.unbox(model.init(r, x, t, y)),
                 out_shardings=shardings)
  apply = jax.jit(model.apply, in_shardings=(shardings, batch, batch, batch))
  with jax.set_mesh(mesh), nn.logical_axis_rules(models.LOGICAL_RULES):
    params = jax.block_until_ready(init(key()))
    params = jax.device_put(perturbed(jax.device_get(params)), shardings)
    out = jax.block_until_ready(apply(params, x, t, y))
  # An FSDP-sharded matrix: its embed dim (32) is split over fsdp (4).
  qkv = params["params"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
  assert qkv.addressable_shards[0].data.shape == (8, 96)
  ref = jitted(model)(jax.device_get(params), x, t, y)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_unet_params_all_named_and_sharded():
  model = built("unet")[0]
  x, t, y = inputs()
  abstract = jax.eval_shape(model.init, key(), x, t, y)
  boxed = jax.tree.leaves(abstract, is_leaf=lambda l: isinstance(
      l, nn.Partitioned))
  assert all(isinstance(l, nn.Partitioned) for l in boxed)
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sh = models.param_shardings(abstract, mesh)
  conv = sh["params"]["down_1_0"]["Conv_0"]["kernel"]  # 3x3x16x32
  assert conv.spec == jax.sharding.PartitionSpec(None, None, None, "fsdp")


def test_param_shardings_skip_missing_axes_and_uneven_dims():
  model = models.get("dit", size="mu", hidden=36, num_heads=2)
  x, t, _ = inputs()
  abstract = jax.eval_shape(model.init, key(), x, t, None)
  data_only = jax.make_mesh((8,), ("data",),
                            axis_types=(jax.sharding.AxisType.Auto,))
  for s in jax.tree.leaves(models.param_shardings(abstract, data_only)):
    assert all(a is None for a in s.spec)
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sh = models.param_shardings(abstract, mesh)
  qkv = sh["params"]["blocks_0"]["attn"]["qkv"]["kernel"]
  assert qkv.spec == jax.sharding.PartitionSpec("fsdp", None)  # 36 / 4
  t_emb = sh["params"]["t_embedder"]["Dense_0"]["kernel"]
  assert t_emb.spec == jax.sharding.PartitionSpec(None, "fsdp")
  with pytest.raises(ValueError, match="jax.sharding.Mesh"):
    models.param_shardings(abstract, "mesh")


# --------------------------------------------------------------- errors ---


def test_errors_say_what_works():
  with pytest.raises(ValueError, match="valid names: .*dit"):
    models.get("vit")
  with pytest.raises(ValueError, match="valid options: .*patch_size"):
    models.get("dit", patchsize=2)
  with pytest.raises(ValueError, match="valid sizes: .*XL"):
    models.get("dit", size="XXL")
  with pytest.raises(ValueError, match="valid sizes"):
    models.get("unet", size="huge")
  with pytest.raises(ValueError, match="patch_size must be one of"):
    models.get("dit", patch_size=3)
  with pytest.raises(ValueError, match="divisible by num_heads"):
    models.get("dit", size="mu", hidden=30, num_heads=4)
  with pytest.raises(ValueError, match="needs tau"):
    models.get("moe_dit", size="mu")
  with pytest.raises(ValueError, match="strictly increasing"):
    models.get("moe_dit", size="mu", tau=(0.0, 0.6, 0.4, 1.0))
  with pytest.raises(ValueError, match="num_experts must be between"):
    models.get("moe_dit", size="mu", tau=TAU, num_experts=4)
  with pytest.raises(ValueError, match="routing must be one of"):
    models.get("moe_dit", size="mu", tau=TAU, routing="topk")
  with pytest.raises(ValueError, match="norm_groups"):
    models.get("unet", size="mu", channels=12)
  with pytest.raises(ValueError, match="floating dtype"):
    models.get("dit", size="mu", dtype="int8")


def test_input_errors_at_trace_time():
  x, t, y = inputs(h=10, w=10)
  with pytest.raises(ValueError,
                     match=r"patch_size in \[1, 2\] or pad .*12x12"):
    models.get("dit", size="mu", patch_size=4).init(key(), x, t, y)
  with pytest.raises(ValueError, match="divisible by 4"):
    models.get("unet", size="mu", channel_mult=(1, 1, 2)).init(
        key(), x, t, y)
  x, t, y = inputs()
  with pytest.raises(ValueError, match="t must be float times of shape"):
    models.get("dit", size="mu").init(key(), x, t[:2], y)
  with pytest.raises(ValueError, match="y must be int labels"):
    models.get("dit", size="mu", num_classes=5).init(key(), x, t, y[:2])
  with pytest.raises(ValueError, match=r"x must be \[B, H, W, C\]"):
    models.get("dit", size="mu").init(key(), x[..., 0], t, y)
