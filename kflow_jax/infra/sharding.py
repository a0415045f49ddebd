"""Mesh, shardings, global batches and the shard_map'd loss and gradient.

The mesh has two named axes, `data` and `fsdp` (docs/environment.md#parallelism). The
batch is split over both (every device holds batch / num_devices examples);
parameters are replicated, or sharded over `fsdp` by the models' logical
axis rules when config.mesh.fsdp > 1. The loss and gradient run under
`jax.shard_map` with an explicit `pmean`, so the data-parallel maths is
written out rather than left to the partitioner.

Device-count invariance: every example gets its own rng key (split from the
step key over the *global* batch) and the loss draws that example's noise
and time from it. The noise an example sees therefore does not depend on
which device holds it, so 1 device and 8 devices (or 2 processes) give the
same loss up to float summation order.
"""
from typing import Callable

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA = "data"
FSDP = "fsdp"
BATCH_AXES = (DATA, FSDP)


def make_mesh(fsdp: int = 1, devices=None) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp = int(fsdp)
  if fsdp < 1 or n % fsdp:
    raise ValueError(
        f"config.mesh.fsdp={fsdp} must be >= 1 and divide the number of "
        f"devices ({n}); use fsdp=1 for pure data parallelism.")
  # Auto axes: the model and optimizer are plain jit code (docs/environment.md#jax-notes:
  # the Explicit default raises ShardingTypeError on such code).
  return jax.make_mesh(
      (n // fsdp, fsdp), BATCH_AXES,
      axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch_size: int, mesh,
                     process_count: int = 1) -> int:
  """Returns the per-process batch size, or raises a clear ValueError."""
  n = mesh.size
  if global_batch_size < 1 or global_batch_size % n:
    raise ValueError(
        f"config.batch_size={global_batch_size} is not divisible by the "
        f"number of devices ({n}); use a multiple of {n}, e.g. "
        f"--config.batch_size={max(n, global_batch_size // n * n or n)}.")
  if global_batch_size % process_count:
    raise ValueError(
        f"config.batch_size={global_batch_size} is not divisible by the "
        f"number of processes ({process_count}).")
  return global_batch_size // process_count


def batch_report(global_batch_size: int, num_devices: int,
                 recipe_devices: int = 0):
  """(info line, warning or None) on the batch each device gets.

  config.batch_size and config.optim.learning_rate are global, so a run on
  another number of devices keeps the recipe's optimisation; what changes
  is the per-device batch (memory, step time, and the statistics of
  anything computed per device). recipe_devices (0 = unknown) is the device
  count the recipe was published with; the warning says when this run
  differs from it.
  """
  per_device = global_batch_size / max(int(num_devices), 1)
  line = (f"Global batch {global_batch_size} over {num_devices} devices: "
          f"{per_device:g} examples per device.")
  recipe_devices = int(recipe_devices)
  if recipe_devices <= 0 or recipe_devices == num_devices:
    return line, None
  warning = (
      f"This recipe was run on {recipe_devices} devices "
      f"({global_batch_size / recipe_devices:g} examples per device); on "
      f"{num_devices} devices each gets {per_device:g}. The global batch and "
      "learning rate are unchanged; check that the per-device batch fits in "
      "memory (--config.mesh.fsdp shards the parameters).")
  return line, warning


def must_block(mesh) -> bool:
  """Whether the host must wait on every step: XLA's CPU collectives can
  deadlock when steps with all-reduces are queued back to back on a CPU
  with several devices (docs/environment.md#cpu-collectives). Accelerators don't need this."""
  return jax.default_backend() == "cpu" and mesh.size > 1


def global_batch(mesh, local_batch: dict) -> dict:
  """Assembles per-process numpy slices into global batch-sharded arrays."""
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
  return out


def state_shardings(mesh, abstract_state, shard_fn=None):
  """Shardings for a (boxed) abstract state from `jax.eval_shape`.

  With fsdp == 1 everything is replicated. Otherwise `shard_fn(boxed, mesh)`
  (models.param_shardings: logical axis rules, dims that don't divide stay
  replicated) places the leaves that carry logical axis names: the params,
  their EMA copies and the optimizer moments, which inherit the boxes; the
  rest is replicated.
  """
  if mesh.shape[FSDP] == 1:
    rep = replicated(mesh)
    return jax.tree.map(lambda _: rep, nn.meta.unbox(abstract_state))
  if shard_fn is None:
    raise ValueError("config.mesh.fsdp > 1 needs the models' sharding rules "
                     "(models.param_shardings).")
  return shard_fn(abstract_state, mesh)


def reduce_aux(aux, axes):
  """Sums leaves named *_sum / *_count over devices (so ratios can be
  formed after the psum); averages everything else."""
  return {k: (lax.psum(v, axes) if k.endswith(("_sum", "_count"))
              else lax.pmean(v, axes)) for k, v in aux.items()}


def per_example(per_example_loss: Callable) -> Callable:
  """Turns (params, example, key) -> (loss, aux) into a local-batch loss
  (params, batch, keys) -> (mean loss, aux) by vmap: *_sum / *_count aux
  leaves are summed over examples, the rest averaged. Handy when each
  example needs its own weight (e.g. padding masks at evaluation)."""
  def local_loss(params, batch, keys):
    losses, aux = jax.vmap(lambda ex, k: per_example_loss(params, ex, k))(
        batch, keys)
    aux = {k: (jnp.sum(v, axis=0) if k.endswith(("_sum", "_count"))
               else jnp.mean(v, axis=0)) for k, v in aux.items()}
    return jnp.mean(losses), aux
  return local_loss


def sharded_loss_and_grad(local_loss: Callable, mesh,
                          with_grad: bool = True):
  """Mean loss and gradient over a global batch, data parallel.

  Args:
    local_loss: (params, batch, keys) -> (loss scalar, aux dict) on one
      device's slice of the batch: the mean over its examples. `keys` [b, 2]
      holds one raw rng key per example; draw each example's randomness
      from its own key so results do not depend on the device count.
    mesh: from `make_mesh`.
    with_grad: False for evaluation (returns grads=None).

  Returns:
    fn(params, batch, keys) -> (loss, aux, grads), all replicated; `batch`
    leaves and `keys` [B, 2] are batch-sharded global arrays. aux leaves
    named *_sum / *_count are summed over devices, others averaged.
  """
  def local(params, batch, keys):
    if with_grad:
      (loss, aux), grads = jax.value_and_grad(local_loss, has_aux=True)(
          params, batch, keys)
      # Equal local batch sizes, so the mean of device means is the global
      # mean, and likewise for the gradient.
      grads = lax.pmean(grads, BATCH_AXES)
    else:
      (loss, aux), grads = local_loss(params, batch, keys), None
    loss = lax.pmean(loss, BATCH_AXES)
    return loss, reduce_aux(aux, BATCH_AXES), grads

  # check_vma=False: with it, jax would psum the gradient of the replicated
  # params implicitly (the transpose of their implicit broadcast); the
  # reduction is written out above as a pmean instead.
  return jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(BATCH_AXES), P(BATCH_AXES)),
      out_specs=(P(), P(), P()), check_vma=False)
