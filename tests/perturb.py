"""Test helper: a model's parameters moved off their initial values.

Zero-initialised output heads (adaLN-Zero, zero convolutions) make a fresh
network output 0, so tests that must see the network's effect perturb its
weights first."""
import jax
from flax import linen as nn


@jax.jit
def perturbed(params, seed, scale):
  """params (boxed or not) + scale * N(0, 1), one key per leaf, in the leaf's
  dtype. One compiled call: an eager loop compiles a random draw per leaf
  shape, which is seconds on 2 cores."""
  leaves, tree = jax.tree.flatten(nn.meta.unbox(params))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [
      l + scale * jax.random.normal(k, l.shape, l.dtype)
      for l, k in zip(leaves, keys)])
