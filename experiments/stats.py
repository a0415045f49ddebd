"""Paired comparisons of two arms over the same seeds, and their verdicts.

Every comparison in docs/results reads the same way: arm A and arm B run on
the same seeds (same data order, noise and labels where the arms allow);
d_k = A_k - B_k per seed; the mean of d with a 95 % Student-t interval over
seeds (n - 1 degrees of freedom). The verdict says what the interval
allows, never more:

  better / worse   the interval excludes 0 (which is which depends on
                   whether the metric is lower- or higher-is-better)
  not resolved     the interval holds 0: no difference was detected, which
                   is not evidence of equality
  equivalent within +-delta   only where a margin delta was stated before
                   the run: both one-sided tests pass (the 90 % interval,
                   i.e. two one-sided 5 % tests, lies inside (-delta, delta))
  same config      the two arms resolve to the same config: they cannot
                   differ, so there is no effect to report
  identical        every per-seed difference of a continuous score (an FD,
                   a loss) is exactly 0: different configs that compute
                   the same thing (e.g. band weights that are all 1), not
                   an effect either. Discrete scores (accuracies over a
                   few hundred samples) tie by chance: continuous=False
  one seed         n < 2: no interval

The t quantile comes from scipy (installed with scikit-learn, a dependency
of the package).
"""
import math
from typing import Optional, Sequence

import numpy as np

CONFIDENCE = 0.95
BETTER, WORSE, NOT_RESOLVED = "better", "worse", "not resolved"
EQUIVALENT, SAME_CONFIG, ONE_SEED = "equivalent", "same config", "one seed"
IDENTICAL = "identical"


def t_quantile(p: float, dof: int) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(p, dof))


def interval(d: Sequence[float], confidence: float = CONFIDENCE):
  """(mean, low, high) of the mean of d, Student-t over len(d) values;
  low = high = None for one value (None, not NaN: result files are JSON)."""
  d = np.asarray(d, np.float64)
  mean = float(d.mean())
  if d.size < 2:
    return mean, None, None
  half = (t_quantile(0.5 + confidence / 2, d.size - 1)
          * float(d.std(ddof=1)) / math.sqrt(d.size))
  return mean, mean - half, mean + half


def paired(a: Sequence[Optional[float]], b: Sequence[Optional[float]], *,
           lower_is_better: bool, margin: Optional[float] = None,
           same_config: bool = False, continuous: bool = True,
           confidence: float = CONFIDENCE) -> dict:
  """Arm a against arm b, seed by seed (a[k] and b[k] share seed k).

  Seeds missing on either side (None) are left out of both. Returns the
  per-seed differences, their mean and interval, the verdict (module
  docstring) and, with `margin`, the two one-sided tests' interval.
  """
  if len(a) != len(b):
    raise ValueError(
        f"paired comparison needs the same seeds on both sides; got {len(a)} "
        f"and {len(b)} values.")
  pairs = [(float(x), float(y)) for x, y in zip(a, b)
           if x is not None and y is not None]
  out = {"n": len(pairs), "confidence": confidence,
         "lower_is_better": lower_is_better, "margin": margin}
  if not pairs:
    return dict(out, diff=[], mean=None, low=None, high=None,
                verdict=ONE_SEED)
  d = [x - y for x, y in pairs]
  bad = [v for v in d if not math.isfinite(v)]
  if bad:
    raise ValueError(f"non-finite paired difference {bad} from a={a}, b={b}; "
                     "a score is NaN or infinite: look at that run's log.")
  mean, low, high = interval(d, confidence)
  out.update(diff=d, mean=mean, low=low, high=high)
  if same_config:
    return dict(out, verdict=SAME_CONFIG)
  if continuous and all(v == 0.0 for v in d):
    return dict(out, verdict=IDENTICAL)
  if len(d) < 2:
    return dict(out, verdict=ONE_SEED)
  if margin is not None:
    # Two one-sided tests, each at level alpha = 1 - confidence: both pass
    # exactly when the (1 - 2 alpha) interval lies inside (-margin, margin).
    _, tl, th = interval(d, 1 - 2 * (1 - confidence))
    out.update(tost_low=tl, tost_high=th)
    if -margin < tl and th < margin:
      return dict(out, verdict=EQUIVALENT)
  if low > 0 or high < 0:
    a_lower = high < 0
    return dict(out, verdict=BETTER if a_lower == lower_is_better else WORSE)
  return dict(out, verdict=NOT_RESOLVED)


def fmt(p: dict, digits: int = 3) -> str:
  """'-2.1 [-3.4, -0.8] better' for a table cell; '-' without data."""
  if p.get("mean") is None:
    return "-"
  g = f"{{:+.{digits}g}}"
  if p["verdict"] in (SAME_CONFIG, IDENTICAL):
    return f"{p['verdict']} (not an effect)"
  if p["n"] < 2:
    return f"{g.format(p['mean'])} (one seed)"
  word = p["verdict"]
  if word == EQUIVALENT:
    word = f"equivalent within ±{p['margin']:g}"
  return (f"{g.format(p['mean'])} [{g.format(p['low'])}, "
          f"{g.format(p['high'])}] {word}")


def sentence(name_a: str, name_b: str, metric: str, p: dict) -> str:
  """One line of findings: what the interval says about a against b."""
  if p.get("mean") is None:
    return f"{name_a} against {name_b} ({metric}): no data."
  if p["verdict"] == SAME_CONFIG:
    return (f"{name_a} and {name_b} resolve to the same config: the same "
            "run, not an effect.")
  if p["verdict"] == IDENTICAL:
    return (f"{name_a} and {name_b} give bit-identical {metric} on every "
            "seed: the change computes nothing different, not an effect.")
  if p["verdict"] == ONE_SEED:
    return (f"{name_a} - {name_b} ({metric}) = {p['mean']:+.3g} on one seed: "
            "no interval, no verdict.")
  ci = (f"{name_a} - {name_b} = {p['mean']:+.3g}, {p['confidence']:.0%} "
        f"interval [{p['low']:+.3g}, {p['high']:+.3g}] over {p['n']} seeds "
        f"({metric}, {'lower' if p['lower_is_better'] else 'higher'} is "
        "better)")
  if p["verdict"] == EQUIVALENT:
    return (f"{ci}: equivalent within ±{p['margin']:g} (two one-sided "
            "tests).")
  return {
      BETTER: f"{ci}: {name_a} is better.",
      WORSE: f"{ci}: {name_a} is worse.",
      NOT_RESOLVED: f"{ci}: not resolved (the interval holds 0; this is not "
                    "evidence that they are equal).",
  }[p["verdict"]]
