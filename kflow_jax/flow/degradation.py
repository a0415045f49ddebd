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
noise; imposing it would put the noise back), or, with the estimate
denoised by a Wiener filter fitted on training images (`with_wiener`), that
filter's gain. Editing is the same with C = the projection on the kept
bands (`band_part`) and x1_ref = the image.

`run_flow(sampler="predict")` replaces the solver and its step on the
path by steps on the predicted image (DDNM-style): at each grid time the
field's clean prediction x1_hat is made consistent, x1_hat <- x1_hat +
C(x1_ref - x1_hat), and the state is put back on the path between a noise
and x1_hat at the next time, a share `renoise` of that noise drawn afresh
(`predict_flow`). `mean_of_draws` averages restorations of independent
noises: PSNR is maximised by the posterior mean, which one draw misses.
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
    symmetric, 0 <= C <= I); zero for noise (the Wiener gain after
    `with_wiener`).
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


def fit_wiener(prior, sigma: float) -> tuple:
  """(mean image [H, W, C], gain [H, W//2+1, C]) of the linear MMSE
  denoiser of y = x + sigma eps under a Gaussian prior with the mean image
  and the power spectrum (rfft2, orthonormal) of the examples `prior`."""
  x = np.asarray(prior, np.float64)
  if x.ndim != 4 or x.shape[0] < 2:
    raise ValueError(f"the Wiener prior needs >= 2 example images [N, H, W, "
                     f"C], got shape {x.shape}.")
  mu = x.mean(0)
  power = (np.abs(np.fft.rfft2(x - mu, axes=(1, 2), norm="ortho")) ** 2
           ).mean(0)
  return mu.astype(np.float32), (power / (power + sigma ** 2)).astype(
      np.float32)


def with_wiener(op: Operator, prior, sigma: float) -> Operator:
  """noise:SIGMA whose estimate is the Wiener filter fitted on `prior`
  (training images): mu + G (y - mu), G = P / (P + sigma^2) per frequency,
  and whose observed component is G (the share of each frequency that y
  determines), instead of y itself and nothing."""
  if op.kind != "noise":
    raise ValueError(f"the Wiener estimate is for noise:SIGMA, not "
                     f"{op.text!r}.")
  mu, gain = fit_wiener(prior, sigma)

  def filt(x):
    h, w = x.shape[1:3]
    xf = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")
    return jnp.fft.irfft2(xf * gain[None], s=(h, w), axes=(1, 2),
                          norm="ortho").astype(jnp.float32)
  return op._replace(estimate=lambda y: mu + filt(y - mu), observed=filt)


def matched_noise(path: paths_lib.Path, x0, t: float, sigma: float):
  """x0 with each coefficient scaled by k = sqrt(1 - (a sigma / (1 - a))^2)
  (0 where a sigma >= 1 - a), a = alpha(t): the start interpolate(path,
  x0_k, y, t) of y = x + sigma eps then holds a x plus noise of std 1 - a
  per coefficient, the path's own level at t, y's noise counted in it
  (orthonormal transform: eps is white per coefficient)."""
  tr = path.transform
  a, _ = paths_lib.alpha(path, jnp.full((x0.shape[0],), t, jnp.float32))
  r = a * sigma / jnp.maximum(1.0 - a, 1e-12)
  return tr.inverse(jnp.sqrt(jnp.clip(1.0 - r * r, 0.0, 1.0))
                    * tr.forward(x0))


def matched_time(path: paths_lib.Path, sigma: float) -> float:
  """The latest t at which y's noise sigma fits under the path's noise in
  every coefficient, max alpha(t) <= 1 / (1 + sigma) (flow matching:
  t = 1 / (1 + sigma); K-Flow: inside band 0's window)."""
  top = 1.0 / (1.0 + float(sigma))
  lo, hi = 0.0, 1.0
  for _ in range(40):
    mid = 0.5 * (lo + hi)
    a, _ = paths_lib.alpha(path, jnp.full((1,), mid, jnp.float32))
    lo, hi = (mid, hi) if float(jnp.max(a)) <= top else (lo, mid)
  return lo


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


SAMPLERS = ("ode", "predict")


def predict_flow(velocity_fn: Callable, path: paths_lib.Path, edges, x0,
                 x1_ref, observed: Optional[Callable], renoise: float = 0.0,
                 keys=None) -> jax.Array:
  """Steps on the predicted image from the path point toward x1_ref at
  edges[0] to 1 (one field call per step).

  At each grid time t0 with state c = T(x), field v and (a, a') = alpha(t0),
  a band that flows (a' > 0) predicts its data and noise
      c1 = c + (1 - a) / a' T(v),   c0 = c - a / a' T(v);
  a finished band is its own data, a band not started is noise with
  x1_ref's part as its data guess. x1_hat = T^-1(c1) is made consistent,
  x1_hat += C(x1_ref - x1_hat), and the state at t1 is
  interpolate(path, n, x1_hat, t1), n = sqrt(1 - r^2) T^-1(c0) + r eps,
  r = renoise, eps fresh per step (`keys`: one key per image). With r = 0
  and no C this is Euler on the projected field exactly (a linear within
  the step); at t1 = 1 the state is the consistent x1_hat.
  """
  tr = path.transform
  batch = x0.shape[0]
  c_ref = tr.forward(x1_ref)
  grid = sampling.make_grid(edges)

  def body(x, ts):
    t0, t1, step = ts
    tb0 = jnp.full((batch,), t0, jnp.float32)
    c, cv = tr.forward(x), tr.forward(velocity_fn(x, tb0))
    a, da = paths_lib.alpha(path, tb0)
    flows = da > 0
    safe = jnp.where(flows, da, 1.0)
    c1 = jnp.where(flows, c + (1.0 - a) / safe * cv,
                   jnp.where(a >= 1.0, c, c_ref))
    c0 = jnp.where(flows, c - a / safe * cv, c)
    x1_hat, noise = tr.inverse(c1), tr.inverse(c0)
    if observed is not None:
      x1_hat = x1_hat + observed(x1_ref - x1_hat)
    if renoise > 0:
      fresh = jax.vmap(lambda k: jax.random.normal(
          jax.random.fold_in(k, step), x.shape[1:], jnp.float32))(keys)
      noise = (np.sqrt(1.0 - renoise ** 2) * noise + renoise * fresh)
    return paths_lib.interpolate(path, noise, x1_hat,
                                 jnp.full((batch,), t1, jnp.float32)), None

  t = jnp.full((batch,), float(edges[0]), jnp.float32)
  x = paths_lib.interpolate(path, x0, x1_ref, t)
  xs = (jnp.asarray(grid.t0), jnp.asarray(grid.t1),
        jnp.arange(len(grid.t0), dtype=jnp.int32))
  x, _ = jax.lax.scan(body, x, xs)
  return x


def run_flow(velocity_fn: Callable, path: paths_lib.Path, spec, x0, x1_ref,
             t_start: float, observed: Optional[Callable],
             num_steps: int = 0, *, project: bool, sampler: str = "ode",
             renoise: float = 0.0, keys=None) -> jax.Array:
  """Integrates from the path point toward x1_ref at t_start to 1, with the
  consistency step for `observed` (None: none). `spec` is the sampling
  spec (generate.Spec: solver, num_steps, step_allocation, extra_times);
  `project`: the sampler projects v on the active bands (its state is
  then T(x)). sampler="predict": `predict_flow` on the same time grid
  (spec.solver not used; `renoise`, `keys` as there)."""
  if sampler not in SAMPLERS:
    raise ValueError(f"restoration sampler {sampler!r} is not one of "
                     f"{SAMPLERS}.")
  if sampler == "predict":
    if renoise > 0 and keys is None:
      raise ValueError("renoise > 0 needs keys (one per image).")
    edges = sampling.time_grid(
        path, flow_steps(path, spec, t_start, num_steps), t_start=t_start,
        extra_times=spec.extra_times, allocation=spec.step_allocation)
    return predict_flow(velocity_fn, path, edges, x0, x1_ref, observed,
                        renoise, keys)
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


def draw_key(rng, draw: int):
  """The noise key of draw d: rng itself for d = 0 (so one draw is the
  restoration of before), fold_in(rng, d) after."""
  return rng if draw == 0 else jax.random.fold_in(rng, draw)


def mean_of_draws(restore_fn: Callable, rng, num_draws: int) -> tuple:
  """(mean, first) of restore_fn(draw_key(rng, d)) over d < num_draws:
  the mean estimates the posterior mean (what PSNR rewards), the first is
  one posterior draw (what a distribution metric judges)."""
  first = total = np.asarray(restore_fn(draw_key(rng, 0)), np.float64)
  for d in range(1, int(num_draws)):
    total = total + np.asarray(restore_fn(draw_key(rng, d)), np.float64)
  return (total / int(num_draws)).astype(np.float32), first.astype(
      np.float32)
