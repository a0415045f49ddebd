"""Identity transform: every coefficient at scale 0, i.e. one band.

K-Flow with this transform is plain (rectified) flow matching, the LFM
baseline, run through the same code path.
"""
import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp


@kamp.register("identity")
def build(shape):

  def forward(x):
    kamp.check_input(x, shape, "identity")
    return x.astype(jnp.float32)

  def inverse(c):
    return c.astype(jnp.float32)

  return kamp.KTransform(
      forward=forward, inverse=inverse,
      kappa=np.zeros(shape, np.float32), weight=np.ones(shape, np.float32),
      name="identity", shape=shape, orthonormal=True)
