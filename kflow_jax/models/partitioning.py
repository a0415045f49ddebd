"""Logical axis rules and parameter shardings for the velocity backbones.

Model code only names axes ("embed", "mlp", "batch", ...); these rules map
the names to the mesh axes `data` and `fsdp`, so the same model runs on one
device, data-parallel, or fully sharded (FSDP) without knowing the devices.

Parameters come boxed: `model.init` returns `nn.Partitioned` leaves holding
the array and its logical names. `nn.get_partition_spec` reads the names,
`nn.meta.unbox(variables)` strips the boxes (do that before handing params
to optax or to `apply` under plain jit).

Typical use (GSPMD jit; axis types must be Auto, see docs/environment.md#jax-notes):

  mesh = jax.make_mesh((2, 4), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  abstract = jax.eval_shape(model.init, rng, x, t, y)
  shardings = models.param_shardings(abstract, mesh)
  init = jax.jit(lambda r: nn.meta.unbox(model.init(r, x, t, y)),
                 out_shardings=shardings)
  with mesh, nn.logical_axis_rules(models.LOGICAL_RULES):
    params = init(rng)       # each device holds 1/4 of every big matrix
"""
import flax.linen as nn
import jax
import numpy as np

# Order matters: a mesh axis is used once per array, first rule first. The
# activation batch takes both axes (FSDP = data parallel over data x fsdp),
# so an activation's "embed" dim is left replicated, while a parameter's
# "embed" dim (every big matrix has one) is sharded over `fsdp`.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", None),
    ("qkv", None),
    ("heads", None),
    ("mod", None),
    ("expert", None),
    ("band", None),
    ("vocab", None),
    ("freq", None),
    ("patch", None),
    ("conv_in", None),
    ("length", None),
    ("height", None),
    ("width", None),
)


def _fit(spec, shape, mesh):
  """Drops mesh axes the mesh lacks or that do not divide the dim evenly.

  jit refuses shardings whose dims are not multiples of the mesh axis size;
  a tiny test model (hidden 32 on fsdp=8, a bias of 3 channels) then stays
  replicated on that dim instead of failing.
  """
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if a in mesh.shape)
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if not axes or shape[i] % size:
      out.append(None)
    else:
      out.append(axes[0] if len(axes) == 1 else axes)
  return jax.sharding.PartitionSpec(*out)


def param_shardings(abstract_variables, mesh, rules=LOGICAL_RULES):
  """NamedSharding for every leaf of (boxed) variables, via the rules.

  Args:
    abstract_variables: the boxed output of `jax.eval_shape(model.init, ...)`
      (or real boxed variables).
    mesh: a `jax.sharding.Mesh`; axes named in the rules but missing from it
      are ignored (a mesh with only `data` gives replicated params).
    rules: logical -> mesh axis rules, default LOGICAL_RULES.

  Returns:
    A pytree of NamedSharding matching the *unboxed* variables.
  """
  if not isinstance(mesh, jax.sharding.Mesh):
    raise ValueError(
        f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}; build "
        "one with jax.make_mesh((data, fsdp), ('data', 'fsdp')).")
  logical = nn.get_partition_spec(abstract_variables)
  mesh_specs = nn.logical_to_mesh(logical, rules)
  shapes = nn.meta.unbox(abstract_variables)
  is_spec = lambda s: isinstance(s, jax.sharding.PartitionSpec)
  return jax.tree_util.tree_map(
      lambda spec, leaf: jax.sharding.NamedSharding(
          mesh, _fit(spec, leaf.shape, mesh)),
      mesh_specs, shapes, is_leaf=is_spec)
