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

# The fast and slow tiers compile hundreds of small programs and run each
# for a few steps: XLA's optimisation passes cost more than they save
# there (the fast tier took 37 % less time without them, three configs'
# command-line runs 39 %). The variable reaches every subprocess a test
# starts. A test that measures speed or FLOPs as a user's run would
# (the benchmarks' quick runs) removes it from its subprocess's
# environment; the parity tier compiles as a user's run does.
TIERS = ("not slow and not parity", "slow")
# Eigen's ops on one thread in each process of a tier: two pytest workers
# on two cores, each with a thread per core, kept both cores busy
# switching (three test files, two back-to-back pairs beside other work:
# 119 s -> 101 s and 113 s -> 104 s of wall time). A process a test
# starts inherits it unless the test sets XLA_FLAGS itself (the
# benchmarks' quick runs do).
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"
# The fast tier also compiles with XLA's older CPU emitters: the fusion
# emitters cost more to compile than its tiny programs run (three test
# files each, quiet, back to back: 49.6 s -> 37.6 s and 72.4 s -> 52.2 s
# of wall time). Not yet in the slow tier: it has not run with it.
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"


def pytest_configure(config):
  tier = config.getoption("markexpr")
  flags = {TIERS[0]: (ONE_THREAD, FAST_COMPILE), TIERS[1]: (ONE_THREAD,)}
  for flag in flags.get(tier, ()):
    if flag not in os.environ["XLA_FLAGS"]:
      os.environ["XLA_FLAGS"] += " " + flag
  if tier in TIERS:
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


# Each tier's longest tests run first, longest first: pytest-xdist hands
# out tests in collection order (the first quarter round-robin), and one
# started last would leave the other worker idle for its whole length
# (the slow tier's half_cost run, started last, once did for 30 min).
# Lengths measured on 2 cores: the fast tier's CLI smoke run (under a
# minute); the slow tier's quick experiments (minutes to tens of minutes)
# and the notebooks (about 3 min each).
FIRST = ("tests/smoke_test.py",
         "tests/experiments_test.py::test_half_cost_quick",
         "tests/experiments_test.py::test_run_all_quick",
         "tests/experiments_test.py::test_multi_condition_quick",
         "tests/experiments_test.py::test_multi_condition_patches_quick",
         "tests/experiments_test.py::test_molecules_quick",
         "tests/notebooks_test.py::test_notebook_runs_headless")


def _rank(item) -> int:
  for i, prefix in enumerate(FIRST):
    if item.nodeid.startswith(prefix):
      return i
  return len(FIRST)


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=_rank)  # stable: the rest keep collection order
