"""Explicit steerability (K-Flow property 6): control generation band by band.

Because time is scale, a band's noise and its conditioning act only on that
band's share of the image. This module turns that into tools:

* noise mixing: initial noise assembled band by band from several seeds
  (the paper's "fix high-scale noise, vary low-scale noise" experiment);
* per-band conditioning: the label only while t < t_drop (class-drop
  experiment) or guidance only in chosen bands;
* editing and training-free restoration: keep an image's coarse bands, fill
  the rest with noise and integrate from where those bands are done.

Restoration time convention (used throughout): keeping bands 0..m means the
integration starts at t_start = tau_{m+1}, the time at which bands 0..m have
finished flowing when there is no overlap (m = -1 keeps nothing: t_start = 0).
The start state is the path point at t_start between the noise x0 and the
estimate x1_hat of the data (the observation, or the best image-space
estimate a degradation gives):  x_start = paths.interpolate(path, x0, x1_hat,
t_start) = x0 + T^-1(alpha(t_start) * T(x1_hat - x0)). Without overlap that
is exactly "kept bands = x1_hat, other bands = noise"; with overlap, band m is
still partly noise and band m+1 is already partly formed from x1_hat's band
m+1, which is the state the model saw in training at t_start.

Noise mixing assumes an orthonormal transform: the band parts
P_s = T^-1 1_s T of a white noise are independent and white only when the
P_s are orthogonal projections (docs/method.md#noise-mixing).
"""
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import guidance as guidance_lib
from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import sampling


def _check_bands(path, bands, what="bands") -> tuple:
  bands = tuple(int(b) for b in np.atleast_1d(np.asarray(bands, np.int64)))
  bad = [b for b in bands if not 0 <= b < path.num_bands]
  if bad:
    raise ValueError(
        f"{what} {bad} are outside the configured bands 0..{path.num_bands - 1}"
        f" (the path has {path.num_bands} bands).")
  return bands


def bands_mask(path: paths_lib.Path, bands) -> np.ndarray:
  """bool numpy of coef_shape: coefficients in any of `bands`."""
  return np.isin(path.band, np.asarray(_check_bands(path, bands)))


# ----------------------------------------------------------------------------
# Noise mixing.


# Transforms whose band projections are orthogonal, for the error message.
ORTHONORMAL_ALTERNATIVES = (
    "fourier, dct, pca, or an orthogonal wavelet (haar, db*, sym*, coif*)")


def check_mixable(path: paths_lib.Path, sources: Sequence[int]) -> None:
  """Refuses to mix noises band by band under a non-orthonormal transform.

  x0 = sum_s P_s n_src(s) with P_s = T^-1 1_s T has covariance
  sum_g P_g P_g^T over the groups of bands that share a source. That is the
  identity for every grouping only when each P_g is an orthogonal
  projection (P_g = P_g^T), i.e. when T is orthonormal. For a biorthogonal
  wavelet (bior2.2: |P - P^T| ~ 0.05, covariance off by ~0.09 on 8x8) the
  mixed noise would not be N(0, I), the distribution the model was trained
  from, so it is refused rather than silently mis-sampled. One source (no
  mixing) is always fine.
  """
  if len(set(int(s) for s in sources)) > 1 and not path.transform.orthonormal:
    raise ValueError(
        f"band-wise noise mixing (shared_bands, --mode=mix) needs an "
        f"orthonormal transform: with {path.transform.name!r} "
        f"(orthonormal=False, e.g. a biorthogonal wavelet) the band parts "
        f"T^-1 1_s T of white noise are not orthogonal, so the mixed x0 "
        f"would not be N(0, I). Use {ORTHONORMAL_ALTERNATIVES}.")


def mix_noise(path: paths_lib.Path, noises: Sequence[jax.Array],
              sources: Sequence[int], *, in_coefficients: bool = False):
  """Initial noise whose band s is taken from noises[sources[s]].

  noises: arrays [B, H, W, C] (broadcastable batch: a [1, ...] noise is
  shared by the whole batch). Returns x [B, H, W, C], or the coefficients
  when in_coefficients; mixed in coefficient space, so two mixes that take a
  band from the same noise hold bit-identical coefficients there (in x space
  they agree up to the float round-off of T^-1).
  """
  src = [int(s) for s in sources]
  if len(src) != path.num_bands or not all(0 <= s < len(noises) for s in src):
    raise ValueError(
        f"sources must give, for each of the {path.num_bands} bands, an index "
        f"into the {len(noises)} noises; got {list(sources)}.")
  check_mixable(path, src)
  batch = max(int(n.shape[0]) for n in noises)
  tr = path.transform
  coefs = [tr.forward(n) for n in noises]
  coefs = [jnp.broadcast_to(c, (batch,) + c.shape[1:]) for c in coefs]
  c = coefs[src[0]]
  for s in range(1, path.num_bands):
    if src[s] != src[0]:
      c = jnp.where(path.band == s, coefs[src[s]], c)
  return c if in_coefficients else tr.inverse(c)


def shared_band_noise(rng: jax.Array, path: paths_lib.Path, batch: int,
                      shared_bands: Sequence[int], *,
                      in_coefficients: bool = False):
  """Noise for `batch` samples that share `shared_bands` and differ elsewhere.

  The paper's steering experiment: sharing the fine (high-scale) bands and
  redrawing the coarse ones varies global content (background, pose) while
  keeping details; sharing the coarse bands does the reverse.
  """
  shared = set(_check_bands(path, shared_bands, "shared_bands"))
  h, w, ch = path.transform.shape
  r_shared, r_new = jax.random.split(rng)
  ref = jax.random.normal(r_shared, (1, h, w, ch), jnp.float32)
  new = jax.random.normal(r_new, (batch, h, w, ch), jnp.float32)
  sources = [0 if s in shared else 1 for s in range(path.num_bands)]
  return mix_noise(path, [ref, new], sources, in_coefficients=in_coefficients)


# ----------------------------------------------------------------------------
# Per-band conditioning.


def band_end_time(path: paths_lib.Path, band: int) -> float:
  """tau_{band+1}: the time at which bands 0..band are done (no overlap)."""
  (band,) = _check_bands(path, [band], "band")
  return float(path.tau[band + 1])


def band_guidance(path: paths_lib.Path, scale: float, bands: Sequence[int],
                  default: float = 1.0) -> tuple:
  """Per-band guidance schedule: `scale` in `bands`, `default` elsewhere
  (1.0 = plain conditional velocity, no guidance)."""
  chosen = set(_check_bands(path, bands))
  return tuple(float(scale) if s in chosen else float(default)
               for s in range(path.num_bands))


def class_drop_velocity(apply_fn: Callable, path: paths_lib.Path,
                        y: jax.Array, *, num_classes: int, t_drop: float,
                        guidance: float = 1.0) -> Callable:
  """velocity_fn(x, t) that uses the label only while t < t_drop.

  The class-drop experiment: with t_drop = 0.3 the label is kept for the
  first 30 % of the scale axis (the coarse bands) and the null label
  (num_classes) is used after. Before t_drop, `guidance` is the CFG scale.
  The field switches at t_drop: pass sampling.sample(...,
  extra_times=[t_drop]) so that no step straddles it.
  """
  if not 0.0 <= float(t_drop) <= 1.0:
    raise ValueError(f"t_drop must lie in [0, 1], got {t_drop}.")
  t_drop = float(t_drop)
  if float(guidance) == 1.0:
    null = jnp.full_like(y, int(num_classes))

    def velocity_fn(x, t):
      return apply_fn(x, t, jnp.where(t < t_drop, y, null))
    return velocity_fn
  # After t_drop the guidance weight is 0: v = v_u, the unconditional field.
  w = lambda t: jnp.where(t < t_drop, float(guidance), 0.0)
  return guidance_lib.cfg_velocity(apply_fn, path, y, num_classes=num_classes,
                               guidance=w)


# ----------------------------------------------------------------------------
# Editing and restoration.


def restoration_start(path: paths_lib.Path, x_obs: jax.Array,
                      noise: jax.Array, keep_bands: int):
  """(t_start, x_start) for keeping bands 0..keep_bands of x_obs.

  x_start = paths.interpolate(path, noise, x_obs, tau_{m+1}): the path's own
  state at t_start with x_obs standing in for the data. Without overlap the
  bands above m are pure noise there; with overlap band m+1 is already
  alpha_{m+1}(t_start) of the way to x_obs's band m+1 (the observation's
  estimate of it), as on the path the model was trained on. keep_bands=-1
  keeps nothing (t_start = 0, x_start = noise).
  """
  if int(keep_bands) == -1:
    m = -1
  else:
    (m,) = _check_bands(path, [keep_bands], "keep_bands")
  if m >= path.num_bands - 1:
    raise ValueError(
        f"keep_bands={m} keeps every band of the {path.num_bands}; nothing is "
        f"left to generate. Use keep_bands < {path.num_bands - 1}.")
  if x_obs.shape != noise.shape:
    raise ValueError(
        f"x_obs and noise must have the same shape, got {x_obs.shape} and "
        f"{noise.shape}.")
  t_start = float(path.tau[m + 1])
  t = jnp.full((x_obs.shape[0],), t_start, jnp.float32)
  return t_start, paths_lib.interpolate(path, noise, x_obs, t)


def _reimpose_fn(path, x_obs, noise, m, project):
  """post_step that puts the kept bands back on the path of the observation."""
  tr = path.transform
  keep = path.band <= m
  c_obs, c_noise = tr.forward(x_obs), tr.forward(noise)
  batch = x_obs.shape[0]

  def post_step(y, t1):
    a, _ = paths_lib.alpha(path, jnp.full((batch,), t1, jnp.float32))
    target = c_noise + a * (c_obs - c_noise)
    if project:
      return jnp.where(keep, target, y)
    return y + tr.inverse(jnp.where(keep, target - tr.forward(y), 0.0))
  return post_step


def restore(velocity_fn: Callable, path: paths_lib.Path, x_obs: jax.Array,
            rng: Optional[jax.Array] = None, *, keep_bands: int,
            noise: Optional[jax.Array] = None, solver: str = "euler",
            num_steps: Optional[int] = None,
            steps_per_band: Optional[Sequence[int]] = None,
            reimpose: bool = True, project: bool = False) -> jax.Array:
  """Training-free restoration: keep bands 0..keep_bands of x_obs, generate
  the rest by integrating from t_start = tau_{keep_bands+1} to 1.

  x_obs: the image or a degraded one (e.g. `degrade(x, "lowres", 4)`) whose
    coarse bands are trusted. noise: x0 (drawn from rng if None).
  reimpose: after each step set the kept bands back to the observation's
    path values (ILVR-style), so the model can never drift from them.
  Fixed-step solvers only (post_step needs the static grid).
  """
  if noise is None:
    if rng is None:
      raise ValueError("restore needs rng or an explicit noise array.")
    noise = jax.random.normal(rng, x_obs.shape, jnp.float32)
  t_start, x_start = restoration_start(path, x_obs, noise, keep_bands)
  post = (_reimpose_fn(path, x_obs, noise, int(keep_bands), project)
          if reimpose else None)
  if num_steps is None and steps_per_band is None:
    num_steps = 4 * path.num_bands
  return sampling.sample(velocity_fn, path, x_start, solver=solver,
                         num_steps=num_steps, steps_per_band=steps_per_band,
                         project=project, t_start=t_start, post_step=post)


def edit(velocity_fn: Callable, path: paths_lib.Path, image: jax.Array,
         rng: jax.Array, *, keep_bands: int, **kwargs) -> jax.Array:
  """Editing: new samples that share `image`'s bands 0..keep_bands.

  Same as restore without re-imposition: the model may adjust the kept
  bands' neighbourhood consistently while fine bands are regenerated.
  """
  kwargs.setdefault("reimpose", False)
  return restore(velocity_fn, path, image, rng, keep_bands=keep_bands,
                 **kwargs)


def area_downsample(x: jax.Array, factor: int) -> jax.Array:
  """Exact mean over factor x factor blocks: [B, H, W, C] -> [B, H/f, W/f, C]."""
  b, h, w, c = x.shape
  f = int(factor)
  if f < 1 or h % f or w % f:
    raise ValueError(
        f"lowres factor must be a positive int dividing H={h} and W={w}, "
        f"got {factor}.")
  return x.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))


def box_upsample(small: jax.Array, factor: int) -> jax.Array:
  """Nearest (box) upsampling, each pixel repeated factor x factor times.

  It is the pseudo-inverse of area_downsample (area_downsample(box_upsample(y))
  == y, and box_upsample(area_downsample(.)) is the orthogonal projection on
  block-constant images), so it keeps everything the small image determines
  exactly, unlike bilinear upsampling, which low-passes it again.
  """
  f = int(factor)
  return jnp.repeat(jnp.repeat(small, f, axis=1), f, axis=2)


def degrade(x: jax.Array, kind: str, factor: float) -> jax.Array:
  """Degraded observations for restoration tests and demos.

  lowres: exact area downsampling by `factor`, then box (nearest)
    upsampling back: the orthogonal projection of x on factor x factor
    block-constant images, so area_downsample(result) == area_downsample(x)
    exactly (bilinear upsampling would attenuate the observed low band).
  blur: Gaussian blur with sigma = factor pixels (periodic borders).
  """
  if x.ndim != 4:
    raise ValueError(f"x must be [B, H, W, C], got shape {x.shape}.")
  _, h, w, _ = x.shape
  if kind == "lowres":
    if float(factor) != int(factor):
      raise ValueError(f"lowres factor must be an integer, got {factor}.")
    return box_upsample(area_downsample(x, int(factor)), int(factor))
  if kind == "blur":
    if not float(factor) > 0:
      raise ValueError(f"blur sigma must be > 0, got {factor}.")
    # Gaussian transfer function on the FFT grid: exact periodic blur.
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    g = np.exp(-2.0 * (np.pi * float(factor)) ** 2 * (fy ** 2 + fx ** 2))
    xf = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2))
    out = jnp.fft.irfft2(xf * g[None, :, :, None].astype(np.float32),
                         s=(h, w), axes=(1, 2))
    return out.astype(jnp.float32)
  raise ValueError(f"Unknown degradation {kind!r}; valid: ('lowres', 'blur').")
