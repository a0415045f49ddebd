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

# The default (fast) tier compiles hundreds of small programs and runs
# each for a few steps: XLA's optimisation passes cost more than they save
# there (the tier took 37 % less time without them, the CLI smoke run 35 %).
# The variable reaches the smoke run's subprocess too. The slow tier (every
# config, benchmarks) compiles as a user's run does.
FAST_TIER = "not slow and not parity"


def pytest_configure(config):
  if config.getoption("markexpr") == FAST_TIER:
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


# The fast tier's longest test (the CLI smoke run, under a minute) runs
# first: pytest-xdist hands out tests in collection order, and started
# last it would leave the other worker idle for its whole length.
FIRST = ("tests/smoke_test.py",)


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: item.nodeid.split("::")[0] not in FIRST)
