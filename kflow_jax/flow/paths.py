"""K-Flow probability paths: bands, band times, blends, x_t and u_t.

docs/method.md#path-and-target. Every coefficient j of c = T(x) belongs to a band s
(by its scale kappa_j and the cut-offs) and flows on the window of its band,
[start_j, end_j) = [tau_s, tau_{s+1}) widened by `overlap`. With the blend a:

  alpha_j(t) = a(clip((t - start_j) / len_j, 0, 1))
  x_t = x0 + T^-1( alpha(t) * T(x1 - x0) )
  u_t =      T^-1( alpha'(t) * T(x1 - x0) )

`interpolate_and_target` computes both with one forward transform and one
inverse (the training loss uses it). alpha is real and c may be complex (Fourier): the product is taken in
coefficient space. All per-coefficient arrays are static numpy, so masks are
compile-time constants. One band with the identity transform gives
alpha(t) = t, i.e. rectified flow (the LFM baseline) through the same code.

t values: functions check concrete t lies in [0, 1] and raise ValueError.
Under jit t is a tracer and cannot be checked; there alpha saturates by the
clip, so t < 0 behaves like t = 0 and t > 1 like t = 1 (u_t = 0 outside
every window).
"""
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp
from kflow_jax.infra import registry

# Blends a(u) on u in [0, 1] with a(0) = 0, a(1) = 1: fn(u) -> (a, a').
BLENDS = registry.Registry("blend", "config.path.blend")
BLENDS.register("linear", lambda u: (u, jnp.ones_like(u)))
BLENDS.register("smoothstep",
                lambda u: (u * u * (3.0 - 2.0 * u), 6.0 * u * (1.0 - u)))
BLENDS.register("cosine", lambda u: (0.5 - 0.5 * jnp.cos(jnp.pi * u),
                                     0.5 * jnp.pi * jnp.sin(jnp.pi * u)))
T_SAMPLING = ("uniform", "logit_normal", "band", "band_logit_normal")


class Path(NamedTuple):
  """A K-Flow path (static; safe to close over in jitted code).

  transform: the KTransform.
  cutoffs: band edges in kappa, (0.0, r_1, ..., 1.0), len S + 1.
  tau: band time edges, (0.0, tau_1, ..., 1.0), len S + 1.
  start, length, end: float32 numpy of coef_shape, each coefficient's window.
  band: int32 numpy of coef_shape, each coefficient's band.
  blend: name of a(u).
  overlap: window widening as a fraction of the band's time length.
  energies: float32 numpy [S] band energies used for tau (None if unused).
  gamma: energy exponent.
  """
  transform: kamp.KTransform
  cutoffs: tuple
  tau: tuple
  start: np.ndarray
  length: np.ndarray
  end: np.ndarray
  band: np.ndarray
  blend: str
  overlap: float
  energies: Optional[np.ndarray]
  gamma: float

  @property
  def num_bands(self) -> int:
    return len(self.tau) - 1

  def windows(self) -> np.ndarray:
    """float32 [S, 2]: (start, end) of every band's window."""
    return window_edges(self.tau, self.overlap)


# ----------------------------------------------------------------------------
# Construction.


def _validate_tau(tau, num_bands) -> tuple:
  t = kamp.validate_edges(tau, "tau")
  if len(t) != num_bands + 1:
    raise ValueError(
        f"tau must hold S + 1 = {num_bands + 1} band time edges, got {len(t)}.")
  return t


def band_times(energies, gamma: float) -> tuple:
  """Energy-aware band times: tau_{s+1} - tau_s proportional to E_s ** gamma.

  gamma = 0 gives uniform times; gamma > 0 gives high-energy (coarse) bands
  more of the time axis, hence more training t and more sampling steps.
  """
  e = np.asarray(energies, np.float64).reshape(-1)
  if e.size < 1 or not np.all(np.isfinite(e)) or np.any(e <= 0):
    raise ValueError(
        f"energies must be finite and > 0 per band, got {e.tolist()}; measure "
        "them with paths.measure_band_energy(transform, batches, cutoffs).")
  if not np.isfinite(gamma):
    raise ValueError(f"gamma must be finite, got {gamma}.")
  w = e ** float(gamma)
  edges = np.concatenate([[0.0], np.cumsum(w) / np.sum(w)])
  edges[-1] = 1.0
  return tuple(float(v) for v in edges)


def window_edges(tau, overlap: float) -> np.ndarray:
  """float32 [S, 2] band windows: [tau_s, tau_{s+1}] widened by overlap * len.

  The widening is split evenly on both sides and clipped to [0, 1], so band 0
  still starts at t = 0 and the last band still ends at t = 1 (x_0 = x0 and
  x_1 = x1 hold for any overlap).
  """
  tau = np.asarray(tau, np.float64)
  half = 0.5 * float(overlap) * np.diff(tau)
  lo = np.clip(tau[:-1] - half, 0.0, 1.0)
  hi = np.clip(tau[1:] + half, 0.0, 1.0)
  return np.stack([lo, hi], axis=1).astype(np.float32)


def make_path(transform: kamp.KTransform, *, num_scales: Optional[int] = None,
              cutoffs: Optional[Sequence[float]] = None,
              tau: Optional[Sequence[float]] = None,
              energies: Optional[Sequence[float]] = None, gamma: float = 0.0,
              blend: str = "linear", overlap: float = 0.0) -> Path:
  """Builds a Path.

  Bands come from `num_scales` (even cut-offs) or explicit `cutoffs` (full
  edge list); neither means one band. Band times are `tau` if given, else
  energy-aware from `energies` ** `gamma` (gamma = 0: uniform). Store the
  energies with the run and pass them again on resume and at sampling.
  """
  BLENDS.get(blend)  # a clear error for an unknown name
  if not 0.0 <= float(overlap) <= 1.0:
    raise ValueError(f"overlap must be in [0, 1], got {overlap}.")
  if cutoffs is None:
    cutoffs = kamp.even_cutoffs(1 if num_scales is None else num_scales)
  else:
    cutoffs = kamp.validate_cutoffs(cutoffs)
    if num_scales is not None and int(num_scales) != len(cutoffs) - 1:
      raise ValueError(
          f"num_scales={num_scales} disagrees with cutoffs {cutoffs} "
          f"({len(cutoffs) - 1} bands); pass only one of them.")
  num_bands = len(cutoffs) - 1
  band = kamp.band_index(transform.kappa, cutoffs)
  counts = np.bincount(band.reshape(-1), minlength=num_bands)
  if np.any(counts == 0):
    raise ValueError(
        f"bands {np.flatnonzero(counts == 0).tolist()} hold no coefficients of "
        f"transform {transform.name!r} with shape {transform.shape} and "
        f"cutoffs {cutoffs}; use fewer scales or other cutoffs.")
  if energies is not None:
    energies = np.asarray(energies, np.float32).reshape(-1)
    if energies.size != num_bands:
      raise ValueError(
          f"energies has {energies.size} entries but there are {num_bands} "
          "bands; measure them with the same cutoffs.")
  if tau is not None:
    tau = _validate_tau(tau, num_bands)
  elif float(gamma) != 0.0:
    if energies is None:
      raise ValueError(
          f"gamma={gamma} needs band energies: pass energies="
          "paths.measure_band_energy(transform, batches, cutoffs).")
    tau = band_times(energies, gamma)
  else:
    tau = tuple(float(v) for v in np.linspace(0.0, 1.0, num_bands + 1))
  win = window_edges(tau, overlap)
  start = win[band, 0]
  end = win[band, 1]
  # Length from the float32 edges, so alpha hits exactly 1 at `end`.
  length = (end.astype(np.float64) - start).astype(np.float32)
  return Path(transform=transform, cutoffs=tuple(cutoffs), tau=tau,
              start=start, length=length, end=end, band=band, blend=blend,
              overlap=float(overlap), energies=energies, gamma=float(gamma))


def to_config(path: Path) -> dict:
  """JSON-able make_path kwargs that rebuild `path` exactly (store it with
  the run; on resume and at sampling: make_path(transform, **config)).

  tau is stored explicitly, so band times never depend on re-measuring.
  """
  return {
      "cutoffs": list(path.cutoffs), "tau": list(path.tau),
      "energies": None if path.energies is None else [
          float(e) for e in path.energies],
      "gamma": path.gamma, "blend": path.blend, "overlap": path.overlap,
  }


def measure_band_energy(transform: kamp.KTransform, batches, cutoffs
                        ) -> np.ndarray:
  """Mean band energy E||P_s x1||^2 over an iterable of batches: numpy [S].

  Batches are arrays [B, H, W, C] or dicts with an "image" entry (the input
  pipeline's format). The mean is over examples, whatever the batch sizes.
  """
  cutoffs = kamp.validate_cutoffs(cutoffs)
  total, count = None, 0
  energy_fn = jax.jit(lambda x: kamp.band_energy(transform, x, cutoffs))
  for batch in batches:
    x = batch["image"] if isinstance(batch, dict) else batch
    n = int(np.shape(x)[0])
    e = np.asarray(energy_fn(jnp.asarray(x)), np.float64) * n
    total = e if total is None else total + e
    count += n
  if count == 0:
    raise ValueError("measure_band_energy got no batches; pass at least one.")
  return (total / count).astype(np.float32)


def measure_noise_band_energy(transform: kamp.KTransform, cutoffs,
                              num_examples: int = 1024, seed: int = 0,
                              batch_size: int = 256) -> np.ndarray:
  """Mean band energy E||P_s x0||^2 of the N(0, I) noise: numpy [S].

  For an orthonormal transform it is the band's coefficient count (up to
  the sampling error of num_examples draws); measuring it covers every
  transform alike. Drawn from a fixed key, so every process and every
  restart gets the same numbers.
  """
  key = jax.random.PRNGKey(int(seed))

  def batches():
    left = int(num_examples)
    for i in range(-(-left // batch_size)):
      n = min(batch_size, left - i * batch_size)
      yield jax.random.normal(jax.random.fold_in(key, i),
                              (n,) + tuple(transform.shape), jnp.float32)
  return measure_band_energy(transform, batches(), cutoffs)


# Which energy the energy-aware band times use (config.path.energy):
# "data": E||P_s x1||^2, what the band holds at t = 1;
# "displacement": E||P_s (x1 - x0)||^2 = data + noise energy (x0 is drawn
# independently of x1 with zero mean), what the band has to move while it
# flows.
ENERGY_RULES = ("data", "displacement")


# ----------------------------------------------------------------------------
# Schedule.


def check_t(t, batch: Optional[int] = None) -> jax.Array:
  """float32 [B] times; concrete values must lie in [0, 1]."""
  if not isinstance(t, jax.core.Tracer):
    tn = np.asarray(t)
    if tn.size and (not np.all(np.isfinite(tn)) or tn.min() < 0
                    or tn.max() > 1):
      raise ValueError(
          f"t must lie in [0, 1] (0 = noise, 1 = data); got values in "
          f"[{tn.min()}, {tn.max()}].")
  t = jnp.asarray(t, jnp.float32)
  if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
    raise ValueError(
        f"t must be float [B] with B = {batch} (one time per example), got "
        f"shape {t.shape}.")
  return t


def _expand(path, t):
  return t.reshape((-1,) + (1,) * path.start.ndim)


def active_mask(path: Path, t) -> jax.Array:
  """bool [B, *coef_shape]: coefficients whose window holds t.

  A window is [start, end), or [start, 1] when it ends at 1. This is
  1[alpha'(t) > 0] (docs/method.md#band-projection), except that a window's own start counts as
  active even where a'(0) = 0 (smoothstep, cosine), so projection never
  freezes a band that is just starting.
  """
  return _inside(path, _expand(path, check_t(t)))


def _inside(path, tb):
  # Windows are half-open [start, end) so a band edge belongs to the next
  # band, except that windows ending at 1 include it: the last step of a
  # sampler evaluates the field at t = 1 and must still see the last band.
  return (tb >= path.start) & ((tb < path.end) | (path.end >= 1.0))


def alpha(path: Path, t) -> tuple:
  """(alpha(t), alpha'(t)), float32 [B, *coef_shape]."""
  tb = _expand(path, check_t(t))
  u = jnp.clip((tb - path.start) / path.length, 0.0, 1.0)
  a, da = BLENDS.get(path.blend)(u)
  return a, jnp.where(_inside(path, tb), da / path.length, 0.0)


def active_band(path: Path, t) -> jax.Array:
  """int32 [B]: the band s with tau_s <= t < tau_{s+1} (t = 1 -> last band)."""
  return kamp.band_of_time(check_t(t), path.tau)


def band_masks(path: Path) -> np.ndarray:
  """bool numpy [S, *coef_shape]: membership of every coefficient per band."""
  ids = np.arange(path.num_bands).reshape((-1,) + (1,) * path.band.ndim)
  return path.band[None] == ids


# ----------------------------------------------------------------------------
# Path and target.


def _check_pair(path, x0, x1):
  if x0.shape != x1.shape:
    raise ValueError(
        f"x0 and x1 must have the same shape, got {x0.shape} and {x1.shape}.")
  return x0.shape[0]


def interpolate(path: Path, x0, x1, t) -> jax.Array:
  """x_t = x0 + T^-1(alpha(t) * T(x1 - x0)), float32 like x."""
  b = _check_pair(path, x0, x1)
  a, _ = alpha(path, check_t(t, b))
  tr = path.transform
  return x0.astype(jnp.float32) + tr.inverse(a * tr.forward(x1 - x0))


def target_velocity(path: Path, x0, x1, t) -> jax.Array:
  """u_t = T^-1(alpha'(t) * T(x1 - x0)) = d x_t / dt."""
  b = _check_pair(path, x0, x1)
  _, da = alpha(path, check_t(t, b))
  tr = path.transform
  return tr.inverse(da * tr.forward(x1 - x0))


def interpolate_and_target(path: Path, x0, x1, t) -> tuple:
  """(x_t, u_t) with one forward and one inverse transform.

  Equals (interpolate(...), target_velocity(...)). By linearity both are
  T^-1 of the same c = T(x1 - x0) scaled per coefficient, so the two
  scaled copies are stacked on the batch axis and inverted in one call:
  the training step pays one forward and one (double-batch) inverse instead
  of two of each, and one transform launch instead of two.
  """
  b = _check_pair(path, x0, x1)
  a, da = alpha(path, check_t(t, b))
  tr = path.transform
  c = tr.forward(x1 - x0)
  both = tr.inverse(jnp.concatenate([a * c, da * c], axis=0))
  return x0.astype(jnp.float32) + both[:b], both[b:]


def _keep(path: Path, x, mask) -> jax.Array:
  """T^-1(mask * T(x)): x with the coefficients outside mask set to 0."""
  tr = path.transform
  return tr.inverse(jnp.where(mask, tr.forward(x), 0.0))


def project_velocity(path: Path, v, t) -> jax.Array:
  """v <- T^-1(1[window active] * T(v)): only bands that flow at t move."""
  return _keep(path, v, active_mask(path, check_t(t, v.shape[0])))


def hide_unstarted(path: Path, x, t) -> jax.Array:
  """x <- T^-1(1[start <= t] * T(x)): the bands whose window has not begun
  by t set to zero (docs/method.md#band-io).

  Lossless for the velocity: there x_t is still the noise x0, which is
  independent of the coefficients that flow (orthonormal T, Gaussian x0),
  so E[u_t | x_t] = E[u_t | hide_unstarted(x_t)].
  """
  return _keep(path, x, _expand(path, check_t(t, x.shape[0])) >= path.start)


def band_network(path: Path, apply_fn, *, hide_input: bool = False,
                 project_output: bool = False):
  """apply_fn(x, t, *args, **kwargs) -> v seen through the bands: its input
  with the unstarted bands hidden (hide_unstarted) and / or its output
  projected onto the active bands (project_velocity). One band: apply_fn
  itself (both are the identity)."""
  if path.num_bands == 1 or not (hide_input or project_output):
    return apply_fn

  def fn(x, t, *args, **kwargs):
    xin = hide_unstarted(path, x, t).astype(x.dtype) if hide_input else x
    v = apply_fn(xin, t, *args, **kwargs)
    if project_output:
      v = project_velocity(path, v, t).astype(v.dtype)
    return v
  return fn


# ----------------------------------------------------------------------------
# Training times.


def band_probabilities(path: Path, band_weights=None) -> np.ndarray:
  """Checked per-band probabilities of t_sampling="band": band_weights
  normalised, or the band lengths (the same as uniform t)."""
  w = np.diff(np.asarray(path.tau, np.float64)) if band_weights is None \
      else np.asarray(band_weights, np.float64).reshape(-1)
  if w.size != path.num_bands or np.any(w < 0) or not np.sum(w) > 0:
    raise ValueError(
        f"band_weights must be {path.num_bands} non-negative numbers with a "
        f"positive sum (one per band), got {np.asarray(w).tolist()}.")
  return w / np.sum(w)


def sample_t(rng, batch: int, path: Path, method: str = "uniform", *,
             band_weights: Optional[Sequence[float]] = None,
             logit_mean: float = 0.0, logit_std: float = 1.0) -> jax.Array:
  """float32 [batch] training times in [0, 1).

  uniform: U[0, 1) (the scale axis as the paper trains it).
  logit_normal: sigmoid(N(logit_mean, logit_std)).
  band: pick band s with probability proportional to band_weights[s], then
    t ~ U[tau_s, tau_{s+1}); band_weights default to the band lengths
    (which equals uniform).
  band_logit_normal: the band as for "band", then the time inside it
    logit-normal: t = tau_s + (tau_{s+1} - tau_s) sigmoid(N(logit_mean,
    logit_std)). Each band is its own flow from noise to data in its local
    time, so this weights every band's local time as logit_normal weights
    flow matching's t; plain logit_normal on a 2-band path instead crowds
    t at the band edge and rarely draws the start of band 0, where the
    coarse content (and the class) is decided.
  """
  if method not in T_SAMPLING:
    raise ValueError(f"Unknown t sampling {method!r}; valid: {T_SAMPLING}.")
  if method == "uniform":
    return jax.random.uniform(rng, (batch,), jnp.float32)
  if method in ("logit_normal", "band_logit_normal") and not logit_std > 0:
    raise ValueError(f"logit_std must be > 0, got {logit_std}.")
  if method == "logit_normal":
    z = logit_mean + logit_std * jax.random.normal(rng, (batch,), jnp.float32)
    return jax.nn.sigmoid(z)
  tau = np.asarray(path.tau, np.float32)
  w = band_probabilities(path, band_weights)
  rb, ru = jax.random.split(rng)
  s = jax.random.choice(rb, path.num_bands, (batch,),
                        p=jnp.asarray(w, jnp.float32))
  lo, hi = jnp.asarray(tau[:-1])[s], jnp.asarray(tau[1:])[s]
  if method == "band_logit_normal":
    u = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(
        ru, (batch,), jnp.float32))
  else:
    u = jax.random.uniform(ru, (batch,), jnp.float32)
  t = lo + (hi - lo) * u
  # Keep t inside its band's half-open interval despite rounding.
  return jnp.minimum(t, jnp.nextafter(hi, lo))
