r"""Restoring through a degradation: the operators, which bands an
observation determines, and the flow with a data-consistency step.

Pure maths on a path (docs/method.md#restoration); the modes that read
config.restore and write images are kflow_jax/modes/restoration.py.

An image is degraded by a named operator (`parse_operator`), the bands that
the observation determines are kept (`determined_fractions`, `auto_keep`),
the flow starts at the band time where those bands are done, and after
every solver step a data-consistency step puts the observed component of
the state back on the path toward the observation (`run_flow`):

  x1_ref  = operator.estimate(y)              (image consistent with y)
  x_start = paths.interpolate(path, x0, x1_ref, tau_{m+1})
  after each step to t:  x <- x + C (interpolate(path, x0, x1_ref, t) - x)

with C the operator's observed component (`Operator.observed`): for lowres
the orthogonal projection on block-constant images (so at t = 1 the result
satisfies area_downsample(x) == y exactly), for inpaint the known-pixel
mask, for blur the Wiener gain, for noise nothing (the observation carries
noise; imposing it would put the noise back). Editing is the same with
C = the projection on the kept bands (`band_part`) and x1_ref = the image.
"""
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import sampling
from kflow_jax.flow import steering

OPERATORS = ("lowres:N", "blur:SIGMA", "noise:SIGMA", "inpaint:X0,Y0,X1,Y1")
# Tikhonov weight of the blur's consistency step and estimate: the Wiener
# gain g^2 / (g^2 + lambda) is 1/2 where the blur keeps 10 % of a frequency.
# Exact inversion (lambda -> 0) would amplify float and 8-bit rounding by
# 1/g, without bound at high frequencies.
BLUR_LAMBDA = 1e-2
NUM_PROBES = 32
EXACT_DIM = 1024


# ----------------------------------------------------------------------------
# Degradation operators.


class Operator(NamedTuple):
  """A degradation y = A(x) and what restoration needs to know about it.

  apply(x, rng) -> y: the observation (lowres: the small image).
  estimate(y) -> x: an image consistent with y (A-wise), the data stand-in
    of the restoration path.
  observed(x) -> C x: the component of x the observation fixes (linear,
    symmetric, 0 <= C <= I); zero for noise.
  display(y) -> x: y shown at the image size (lowres: nearest up-sampling).
  baseline(y) -> x or None: the classical answer to compare with (lowres:
    bicubic up-sampling).
  """
  text: str
  kind: str
  apply: Callable
  estimate: Callable
  observed: Callable
  display: Callable
  baseline: Optional[Callable]


def _numbers(text: str, arg: str, count: int, kind=float) -> list:
  parts = arg.split(",") if arg else []
  try:
    vals = [kind(p) for p in parts]
  except ValueError:
    vals = []
  if len(vals) != count:
    raise ValueError(
        f"degradation {text!r}: expected {count} "
        f"{'integer' if kind is int else 'number'}(s) after ':'; valid forms: "
        f"{', '.join(OPERATORS)}.")
  return vals


def _gaussian_gain(shape, sigma: float) -> np.ndarray:
  """Transfer function of a periodic Gaussian blur on the rfft2 grid."""
  h, w = shape
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  return np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))


def _filter(x, gain):
  h, w = x.shape[1:3]
  xf = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2))
  g = jnp.asarray(gain[None, :, :, None], jnp.float32)
  return jnp.fft.irfft2(xf * g, s=(h, w), axes=(1, 2)).astype(jnp.float32)


def parse_operator(text: str, shape: Sequence[int]) -> Operator:
  """Operator of a degradation string (OPERATORS) for images of `shape`."""
  h, w, _ = (int(v) for v in shape)
  kind, _, arg = str(text).partition(":")
  if kind == "lowres":
    (f,) = _numbers(text, arg, 1, int)
    if f < 2 or h % f or w % f:
      raise ValueError(
          f"degradation {text!r}: N must be an integer >= 2 dividing the "
          f"image size {h}x{w}.")
    down = lambda x: steering.area_downsample(x, f)
    up = lambda y: steering.box_upsample(y, f)
    # Projection on {x: down(x) = y}: box up-sampling is down's
    # pseudo-inverse (down(up(y)) = y, up(down(.)) an orthogonal projection).
    fix = lambda x, y: x + up(y - down(x))
    bicubic = lambda y: jax.image.resize(
        y, (y.shape[0], h, w, y.shape[3]), "bicubic")
    return Operator(
        text=text, kind=kind, apply=lambda x, rng=None: down(x),
        # Bicubic detail, then corrected so that it matches y exactly.
        estimate=lambda y: fix(bicubic(y), y),
        observed=lambda x: up(down(x)), display=up, baseline=bicubic)
  if kind == "blur":
    (sigma,) = _numbers(text, arg, 1)
    if not sigma > 0:
      raise ValueError(f"degradation {text!r}: sigma must be > 0.")
    g = _gaussian_gain((h, w), sigma)
    wiener = g ** 2 / (g ** 2 + BLUR_LAMBDA)
    return Operator(
        text=text, kind=kind, apply=lambda x, rng=None: _filter(x, g),
        estimate=lambda y: _filter(y, g / (g ** 2 + BLUR_LAMBDA)),
        observed=lambda x: _filter(x, wiener), display=lambda y: y,
        baseline=None)
  if kind == "noise":
    (sigma,) = _numbers(text, arg, 1)
    if not sigma > 0:
      raise ValueError(f"degradation {text!r}: sigma must be > 0.")

    def add_noise(x, rng=None):
      if rng is None:
        raise ValueError("degradation noise needs an rng.")
      return x + sigma * jax.random.normal(rng, x.shape, jnp.float32)
    return Operator(text=text, kind=kind, apply=add_noise,
                    estimate=lambda y: y, observed=jnp.zeros_like,
                    display=lambda y: y, baseline=None)
  if kind == "inpaint":
    x0, y0, x1, y1 = _numbers(text, arg, 4, int)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
      raise ValueError(
          f"degradation {text!r}: need 0 <= X0 < X1 <= {w} and "
          f"0 <= Y0 < Y1 <= {h} (the box of unknown pixels).")
    known = np.ones((1, h, w, 1), np.float32)
    known[:, y0:y1, x0:x1] = 0.0

    def fill(y):
      # Unknown pixels start at the mean of the known ones (per image and
      # channel): the flow generates them; this is only the path's stand-in.
      mean = (y * known).sum((1, 2), keepdims=True) / known.sum()
      return y * known + mean * (1.0 - known)
    return Operator(
        text=text, kind=kind, apply=lambda x, rng=None: x * known,
        estimate=fill, observed=lambda x: x * known,
        display=lambda y: y * known, baseline=None)
  raise ValueError(f"unknown degradation {text!r}; valid forms: "
                   f"{', '.join(OPERATORS)}.")


def band_part(path: paths_lib.Path, x, bands) -> jax.Array:
  """P x with P = T^-1 1_bands T: the part of x in `bands`."""
  tr = path.transform
  keep = steering.bands_mask(path, bands)
  return tr.inverse(jnp.where(keep, tr.forward(x), 0))


def determined_fractions(path: paths_lib.Path, op: Operator,
                         y=None, sigma: Optional[float] = None,
                         prior=None) -> list:
  """Per band s, the share of the band that the observation fixes.

  Linear operators: E<P_s z, C P_s z> / E||P_s z||^2, 1 when band s lies in
  the observed subspace, 0 when the observation says nothing about it.
  With `prior` (example images of the data, e.g. training images) z runs
  over them: the share of the band's energy *in the data* that is observed.
  Natural images put most of a band's energy at its low end, where area
  averaging passes most, so this is larger than the white-noise share.
  Without it z is white: tr(P_s^T C P_s) / tr(P_s^T P_s), exact (z over
  the pixel basis) up to EXACT_DIM values, else NUM_PROBES white probes of
  a fixed key. Noise: the Wiener gain of the
  band, 1 - sigma^2 / (mean |c|^2 of the band of y), from the observation y
  (each coefficient of an orthonormal transform carries noise power
  sigma^2).
  """
  tr = path.transform
  if op.kind == "noise":
    c = np.asarray(tr.forward(y))
    power = np.abs(c) ** 2
    out = []
    for s in range(path.num_bands):
      band = power[:, path.band == s].mean()
      out.append(float(max(0.0, 1.0 - sigma ** 2 / max(band, 1e-12))))
    return out
  dim = int(np.prod(tr.shape))
  if prior is not None:
    z = jnp.asarray(prior, jnp.float32)
  elif dim <= EXACT_DIM:
    z = jnp.eye(dim, dtype=jnp.float32).reshape((dim,) + tuple(tr.shape))
  else:
    z = jax.random.normal(jax.random.key(0), (NUM_PROBES,) + tr.shape)
  out = []
  for s in range(path.num_bands):
    q = band_part(path, z, [s])
    num, den = float(jnp.sum(q * op.observed(q))), float(jnp.sum(q * q))
    # A band the prior never uses (den = 0) has nothing to generate.
    out.append(num / den if den > 1e-12 * q.size else 1.0)
  return out


def auto_keep(fractions: Sequence[float], threshold: float) -> int:
  """The last m such that bands 0..m are all determined >= threshold, at
  most S-2 (something must be left to generate); -1 if band 0 is not."""
  m = -1
  for f in fractions[:-1]:
    if f < threshold:
      break
    m += 1
  return m


# ----------------------------------------------------------------------------
# Integration with a consistency step.


def flow_steps(path: paths_lib.Path, spec, t_start: float,
               num_steps: int = 0) -> int:
  """Solver steps from t_start to 1: `num_steps`, or (0) the spec's share
  of spec.num_steps after t_start; at least one per segment."""
  segments = 1 + len(sampling.switch_times(path, t_start, 1.0,
                                           spec.extra_times))
  share = sampling.step_share(path, t_start, 1.0, spec.step_allocation)
  n = int(num_steps) or round(spec.num_steps * share)
  return max(segments, n)


def consistency_step(path: paths_lib.Path, observed: Callable, x0, x1_ref,
                     project: bool) -> Callable:
  """post_step(y, t1): x <- x + C(interpolate(path, x0, x1_ref, t1) - x).

  The component C of the state that the observation fixes is set to its
  value on the path toward x1_ref at the step's end time, at the noise
  level the path has there (ILVR-style); at t1 = 1 it is C x1_ref, so the
  result agrees with the observation (exactly for projections C).
  With band projection the sampler's state is T(x).
  """
  tr = path.transform
  batch = x0.shape[0]

  def fix(x, t1):
    ref = paths_lib.interpolate(path, x0, x1_ref,
                                jnp.full((batch,), t1, jnp.float32))
    return x + observed(ref - x)

  if not project:
    return fix
  return lambda c, t1: tr.forward(fix(tr.inverse(c), t1))


def run_flow(velocity_fn: Callable, path: paths_lib.Path, spec, x0, x1_ref,
             t_start: float, observed: Optional[Callable],
             num_steps: int = 0, *, project: bool) -> jax.Array:
  """Integrates from the path point toward x1_ref at t_start to 1, with the
  consistency step for `observed` (None: none). `spec` is the sampling
  spec (generate.Spec: solver, num_steps, step_allocation, extra_times);
  `project`: the sampler projects v on the active bands (its state is
  then T(x))."""
  if sampling.is_adaptive(spec.solver):
    raise ValueError(
        f"--mode=restore/edit run a consistency step between solver steps, "
        f"which needs a fixed-step solver; config.sample.solver="
        f"{spec.solver!r} is adaptive. Use e.g. "
        "--config.sample.solver=heun.")
  t = jnp.full((x0.shape[0],), t_start, jnp.float32)
  x_start = paths_lib.interpolate(path, x0, x1_ref, t)
  post = (None if observed is None else
          consistency_step(path, observed, x0, x1_ref, project))
  return sampling.sample(
      velocity_fn, path, x_start, solver=spec.solver,
      num_steps=flow_steps(path, spec, t_start, num_steps),
      project=project, t_start=t_start, extra_times=spec.extra_times,
      allocation=spec.step_allocation, post_step=post)

