"""experiments/common.py helpers that need no training: the cost record
of every command, and arms that resolve to the same config."""
import os

from experiments import common


def test_commands_record_their_cost_and_the_root_sums_it(tmp_path):
  for arm in ("a", "b"):
    common.command(["-c", "import time; time.sleep(0.2)"],
                   str(tmp_path / "runs" / arm / "seed0" / "train.log"))
  cost = common.measured_cost(str(tmp_path))
  assert cost["commands"] == 2
  assert 0.4 <= cost["seconds"] < 30
  assert os.path.exists(tmp_path / "runs" / "a" / "seed0" / common.COST_FILE)


def test_arms_with_the_same_resolved_config_share_one_run(tmp_path):
  root = str(tmp_path)
  base = common.Run("default", "configs/digits.py:transform=fourier", (), 0,
                    os.path.join(root, "runs", "default", "seed0"))
  # num_scales=2 is the config's own value: the same run.
  twin = common.Run("bands2", "configs/digits.py:transform=fourier",
                    ("--config.path.num_scales=2",), 0,
                    os.path.join(root, "runs", "bands2", "seed0"))
  other = twin._replace(name="bands3", overrides=(
      "--config.path.num_scales=3",), workdir=os.path.join(
          root, "runs", "bands3", "seed0"))
  assert common._same_config_run(root, base) == base  # pylint: disable=protected-access
  shared = common._same_config_run(root, twin)  # pylint: disable=protected-access
  assert shared.workdir == base.workdir and common.same_run(shared, base)
  assert common._same_config_run(root, other) == other  # pylint: disable=protected-access
  # Another seed is another run.
  seed1 = twin._replace(seed=1, workdir=os.path.join(root, "runs", "bands2",
                                                     "seed1"))
  assert common._same_config_run(root, seed1) == seed1  # pylint: disable=protected-access
