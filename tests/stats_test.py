"""experiments/stats.py: the paired rule every verdict of docs/results uses."""
import numpy as np
import pytest
from scipy import stats as sps

from experiments import stats


def test_interval_matches_scipy_t_interval():
  d = [1.3, -0.2, 2.1, 0.7]
  mean, low, high = stats.interval(d)
  ref = sps.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=sps.sem(d))
  assert mean == pytest.approx(np.mean(d))
  assert (low, high) == pytest.approx(ref)


def test_verdicts_follow_the_interval_and_the_metric_direction():
  base = [10.0, 11.0, 12.0]
  lower = [9.0, 9.8, 11.1]  # a - b all negative, tight
  p = stats.paired(lower, base, lower_is_better=True)
  assert p["verdict"] == stats.BETTER and p["high"] < 0
  assert stats.paired(lower, base, lower_is_better=False)["verdict"] == (
      stats.WORSE)
  noisy = [8.0, 13.0, 11.5]  # differences -2, +2, -0.5: interval holds 0
  p = stats.paired(noisy, base, lower_is_better=True)
  assert p["verdict"] == stats.NOT_RESOLVED and p["low"] < 0 < p["high"]
  assert "not resolved" in stats.sentence("A", "B", "fd", p)


def test_equivalence_needs_a_margin_and_a_tight_interval():
  a, b = [1.0, 2.0, 3.0, 4.0], [1.01, 1.98, 3.02, 3.99]
  assert stats.paired(a, b, lower_is_better=True)["verdict"] == (
      stats.NOT_RESOLVED)
  p = stats.paired(a, b, lower_is_better=True, margin=0.1)
  assert p["verdict"] == stats.EQUIVALENT
  assert -0.1 < p["tost_low"] and p["tost_high"] < 0.1
  # A margin smaller than the spread of the differences: not equivalent.
  assert stats.paired(a, b, lower_is_better=True, margin=0.01)["verdict"] == (
      stats.NOT_RESOLVED)


def test_same_config_and_one_seed_give_no_effect():
  p = stats.paired([1.0, 2.0], [1.0, 2.0], lower_is_better=True,
                   same_config=True)
  assert p["verdict"] == stats.SAME_CONFIG
  assert "not an effect" in stats.fmt(p)
  p = stats.paired([58.884, 41.2], [58.884, 41.2], lower_is_better=True)
  assert p["verdict"] == stats.IDENTICAL
  assert "not an effect" in stats.sentence("A", "B", "fd", p)
  # Accuracies tie by chance: a zero-width interval, not "identical".
  p = stats.paired([0.98, 0.97], [0.98, 0.97], lower_is_better=False,
                   continuous=False)
  assert p["verdict"] == stats.NOT_RESOLVED
  p = stats.paired([1.0, None], [3.0, 2.0], lower_is_better=True)
  assert p["n"] == 1 and p["verdict"] == stats.ONE_SEED
  assert p["low"] is None and p["high"] is None


def test_refuses_unpaired_or_nan_scores():
  with pytest.raises(ValueError, match="same seeds"):
    stats.paired([1.0], [1.0, 2.0], lower_is_better=True)
  with pytest.raises(ValueError, match="NaN"):
    stats.paired([1.0, float("nan")], [1.0, 2.0], lower_is_better=True)
