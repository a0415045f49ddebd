"""The K-Flow training loss with per-band diagnostics.

docs/method.md#loss:  L = E_t E_{x0, x1} w(band(t)) || v(x_t, t, y) - u_t ||^2
with x_t, u_t from `paths`. The per-example error is the mean over all
elements (for an orthonormal T it equals the coefficient-space error by
Parseval, so the loss is the same in either domain).

aux carries per-band sums (`band_loss_sum` [S], `band_loss_sq_sum` [S] of
the squared per-example errors, `band_count` [S]) rather than means: data-parallel code psums both and divides, which gives the exact
global per-band mean even when a shard holds no example of some band.
"""
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp
from kflow_jax import models
from kflow_jax.flow import paths as paths_lib


def _band_weights(path, band_loss_weights):
  if band_loss_weights is None:
    return None
  w = np.asarray(band_loss_weights, np.float32).reshape(-1)
  if w.size != path.num_bands or not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(
        f"band_loss_weights must be {path.num_bands} finite non-negative "
        f"numbers (one per band), got {w.tolist()}.")
  return jnp.asarray(w)


# Per-band loss weighting rules (config.loss.band_weighting).
BAND_WEIGHTINGS = ("none", "target_scale")


def target_scale_weights(path) -> tuple:
  """w_s proportional to L_s^2, L_s the length of band s's window.

  On band s the target (x1 - x0) restricted to the band is divided by L_s
  (alpha' = 1 / L_s), so an error of the same relative size costs 1 / L_s^2
  more on a short band than on a long one, and short bands dominate the
  gradient. Weighting by L_s^2 measures every band's error on the scale of
  the displacement x1 - x0 itself, as flow matching does. Normalised so
  that the mean weight under uniform t is 1: sum_s L_s w_s = 1 (with
  overlapping windows, L_s is the window, and the sum uses band lengths).
  """
  win = np.asarray(path.windows(), np.float64)
  lengths = win[:, 1] - win[:, 0]
  share = np.diff(np.asarray(path.tau, np.float64))
  w = lengths ** 2
  return tuple(float(v) for v in w / np.sum(share * w))


def draw_examples(keys: jax.Array, example_shape, draw_t: Callable,
                  labels: Optional[jax.Array] = None, *,
                  label_dropout: float = 0.0, num_classes: int = 0):
  """(x0 [B, *example_shape], t [B], y [B] or None): every training
  example's random draw, from its own key.

  The one place a training example's randomness is drawn (the
  full-resolution and the scale-adaptive loss both call it), so the same
  key gives the same noise in either, and the loss does not depend on how
  the batch is split over devices (sharding.py). keys [B, 2];
  draw_t(key) -> float32 scalar t (paths.sample_t for the run's law, or
  adaptive_loss.band_time given the band); labels [B] are dropped to the
  null class num_classes with probability label_dropout (classifier-free
  guidance); y is None for unconditional runs (num_classes 0). The key
  split is fixed: changing it changes every run's noise.
  """
  def draw(key):
    k_loss, k_drop = jax.random.split(key)
    r_noise, r_t = jax.random.split(k_loss)
    x0 = jax.random.normal(r_noise, tuple(example_shape), jnp.float32)
    return x0, draw_t(r_t), k_drop
  x0, t, k_drop = jax.vmap(draw)(keys)
  if not num_classes:
    return x0, t, None
  y = labels.astype(jnp.int32)
  if label_dropout > 0:
    y = jax.vmap(lambda k, yy: models.drop_labels(
        k, yy[None], label_dropout, num_classes)[0])(k_drop, y)
  return x0, t, y


def kflow_loss(velocity_fn: Callable, path: paths_lib.Path, x1: jax.Array,
               rng: jax.Array, y: Optional[jax.Array] = None, *,
               t_sampling: str = "uniform",
               band_weights: Optional[Sequence[float]] = None,
               band_loss_weights: Optional[Sequence[float]] = None,
               logit_mean: float = 0.0, logit_std: float = 1.0,
               t: Optional[jax.Array] = None,
               x0: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None):
  """K-Flow flow-matching loss.

  Args:
    velocity_fn: (x_t [B,H,W,C], t [B], y [B] or None) -> v [B,H,W,C].
    path: a paths.Path.
    x1: data batch [B, H, W, C].
    rng: key for the noise x0 and the times t.
    y: optional labels [B], passed through to velocity_fn.
    t_sampling: one of paths.T_SAMPLING (see paths.sample_t).
    band_weights: per-band probabilities for t_sampling="band" and
      "band_logit_normal".
    band_loss_weights: optional w(band) [S] weighting each example's error by
      the band active at its t.
    logit_mean, logit_std: for t_sampling="logit_normal" and
      "band_logit_normal".
    t, x0: optional fixed times / noise (tests, evaluation); drawn if None.

  Returns:
    (loss, aux): loss the weighted batch mean; aux = {"loss",
    "band_loss_sum" [S], "band_count" [S]} where band_loss_sum holds the
    unweighted per-example errors summed per active band.
  """
  if x1.ndim != 4:
    raise ValueError(f"x1 must be [B, H, W, C], got shape {x1.shape}.")
  batch = x1.shape[0]
  r_noise, r_t = jax.random.split(rng)
  if x0 is None:
    x0 = jax.random.normal(r_noise, x1.shape, jnp.float32)
  if t is None:
    t = paths_lib.sample_t(r_t, batch, path, t_sampling,
                           band_weights=band_weights, logit_mean=logit_mean,
                           logit_std=logit_std)
  t = paths_lib.check_t(t, batch)
  # One forward and one inverse transform for both (see paths).
  x_t, u_t = paths_lib.interpolate_and_target(path, x0, x1, t)
  v = velocity_fn(x_t, t, y)
  if v.shape != u_t.shape:
    raise ValueError(
        f"velocity_fn returned shape {v.shape}, expected {u_t.shape} (the "
        "shape of x).")
  err = jnp.mean(jnp.square(v.astype(jnp.float32) - u_t),
                 axis=tuple(range(1, u_t.ndim)))
  band = paths_lib.active_band(path, t)
  w = _band_weights(path, band_loss_weights)
  werr = err if w is None else w[band] * err
  onehot = jax.nn.one_hot(band, path.num_bands, dtype=jnp.float32)
  if mask is None:
    loss = jnp.mean(werr)
  else:
    # Padding examples (finite evaluation) weigh nothing; the sums below
    # let shards be added up before the mean is taken.
    mask = mask.astype(jnp.float32)
    onehot = onehot * mask[:, None]
    loss = jnp.sum(werr * mask) / jnp.maximum(jnp.sum(mask), 1.0)
  aux = {
      "loss": loss,
      "band_loss_sum": jnp.einsum("b,bs->s", err, onehot),
      # Second moments: the per-band spread the allocation rule reads
      # (tools/band_allocation.py).
      "band_loss_sq_sum": jnp.einsum("b,bs->s", jnp.square(err), onehot),
      "band_count": jnp.sum(onehot, axis=0),
  }
  if mask is not None:
    aux["loss_sum"] = jnp.sum(werr * mask)
    aux["mask_count"] = jnp.sum(mask)
  return loss, aux


def band_losses(aux) -> jax.Array:
  """Per-band mean loss from (possibly psummed) aux; NaN for empty bands."""
  return kamp.band_mean(aux["band_loss_sum"], aux["band_count"])
