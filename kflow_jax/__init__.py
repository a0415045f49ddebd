"""kflow_jax: K-Flow (flow matching along the K-amplitude) in JAX/Flax."""

__version__ = "0.1.0"
