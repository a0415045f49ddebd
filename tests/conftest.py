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
    # -n N without --dist: whole modules per worker (see FIRST below). Only
    # the fast tier: the slow tier's long tests of one module (the
    # experiments' quick runs) must spread over the workers.
    if getattr(config.option, "dist", "no") == "load":
      config.option.dist = "loadscope"


# The fast tier runs with `--dist loadscope` (pytest_configure): a module's
# tests stay on one worker, so a module-scoped fixture (the test
# classifier, the tiny data sets, a compiled network) is built once, not
# once per worker (6 % less CPU in the fast tier). Modules are handed out in collection order, so the
# longest go first (measured seconds of the fast tier, on 2 cores): started
# last, a long module would leave the other worker idle for its length.
FIRST = ("tests/smoke_test.py", "tests/models_test.py", "tests/coarse_test.py",
         "tests/slots_test.py", "tests/adaptive_test.py",
         "tests/cheap_metrics_test.py", "tests/restoration_test.py",
         "tests/token_slots_test.py", "tests/assembly_test.py",
         "tests/sampling_test.py", "tests/rigid_path_test.py",
         "tests/losses_test.py", "tests/paths_test.py", "tests/kamp_test.py",
         "tests/main_test.py")


def _rank(item):
  module = item.nodeid.split("::")[0]
  return FIRST.index(module) if module in FIRST else len(FIRST)


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=_rank)  # stable: the order inside a module is kept
