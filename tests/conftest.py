"""Test setup: 8 fake CPU devices, set before jax is first imported.

Sharding code paths (mesh, shard_map, pmean) only run for real when there
is more than one device, so every test sees 8 host devices.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests must never hit the network (tfds would retry for minutes).
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-dir-for-tests")
