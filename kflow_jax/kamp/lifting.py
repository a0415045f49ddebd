"""Lifting factorization of a two-channel filter bank (Daubechies-Sweldens).

A periodized one-level DWT maps the even/odd samples (e, o) of a signal to
(approximation, detail) by the 2x2 analysis polyphase matrix P(z) of Laurent
polynomials. The Euclidean algorithm on its first row writes

  P(z) = D(z) L_n(z) ... L_1(z),

with every L_i an elementary lifting step (o += t(z) e, or e += s(z) o) and
D a monomial matrix (diagonal or anti-diagonal, one scale and one shift per
output). Applying the steps costs O(N) per level and needs only circular
shifts (jnp.roll) of the half-length polyphase signals, so a periodized DWT
of any PyWavelets wavelet becomes a handful of fused elementwise passes.

Everything here is float64 numpy run once per wavelet and cached; the
resulting `Lifting` holds plain Python floats and ints (static under jit).

`kamp.wavelet` does not run these steps: under XLA:CPU every step became
its own materialized pass (or was re-computed inside each consumer), so the
transform applies PyWavelets' filters as one stencil pass per axis, or one
matmul for axes <= 64 (see kflow_jax/kamp/wavelet.py). Re-measured for db6
at 256x256 (48 planes, one level along W, one interleaved run): `analysis`
under jit 13.5 ms, the stencil 4.5 ms, although lifting needs half the
multiply-adds (12 taps in 7 steps per output pair, against 2 x 12); on CPU
the passes over memory bound the speed, not the arithmetic. The
factorization stays as a tested, exact reference (e.g. for a future
in-place or GPU lifting kernel).

Laurent convention: a polynomial is (coeffs, lo) standing for
sum_i coeffs[i] z^(lo + i), and multiplying a signal by z^p means delaying it
by -p samples, i.e. jnp.roll(x, -p). So (p * x)[n] = sum_i c_i x[n + lo + i].
"""
import functools
from typing import NamedTuple

import numpy as np
import pywt

# Coefficients below this (relative to the filter's largest) are exact zeros
# padded by PyWavelets (biorthogonal filters) or float64 round-off.
_ZERO_TOL = 1e-10
# A factorization whose float64 replay misses the filter bank by more than
# this is rejected (it would not match PyWavelets in float32 either).
_CHECK_TOL = 1e-6
# ... and one whose float32 replay (forward and round trip, unit-variance
# data) is off by more than this would break the 1e-5 float32 contract.
_FP32_TOL = 2e-6


class Step(NamedTuple):
  """One lifting step: target += sum_i taps[i] * roll(source, -(lo + i))."""
  target: int  # 0: even/approximation channel, 1: odd/detail channel.
  taps: tuple
  lo: int


class Lifting(NamedTuple):
  """P(z) = D(z) L_n ... L_1 for one wavelet (PyWavelets periodization).

  steps: L_1 ... L_n, applied in this order by the forward transform.
  swap: D is anti-diagonal: approximation comes from channel 1.
  scales: (K_a, K_d) multiplying the approximation and detail outputs.
  shifts: (p_a, p_d) monomial powers z^p of the two outputs.
  """
  name: str
  steps: tuple
  swap: bool
  scales: tuple
  shifts: tuple
  orthogonal: bool


def _trim(c, lo):
  """Drops (near-)zero end coefficients; an empty array is the zero poly."""
  c = np.asarray(c, np.float64)
  scale = max(np.max(np.abs(c)) if c.size else 0.0, 1e-300)
  nz = np.nonzero(np.abs(c) > _ZERO_TOL * max(scale, 1.0))[0]
  if nz.size == 0:
    return np.zeros(0), 0
  return c[nz[0]:nz[-1] + 1], lo + int(nz[0])


def _mul(a, b):
  (ca, la), (cb, lb) = a, b
  if ca.size == 0 or cb.size == 0:
    return np.zeros(0), 0
  return np.convolve(ca, cb), la + lb


def _sub(a, b):
  (ca, la), (cb, lb) = a, b
  if cb.size == 0:
    return ca, la
  if ca.size == 0:
    return -cb, lb
  lo = min(la, lb)
  hi = max(la + ca.size, lb + cb.size)
  out = np.zeros(hi - lo)
  out[la - lo:la - lo + ca.size] += ca
  out[lb - lo:lb - lo + cb.size] -= cb
  return _trim(out, lo)


def _divide(a, b, bottom):
  """Quotient q with a - q b shorter than b.

  The remainder keeps the support of `a` minus len(q) cancelled positions:
  `bottom` of them at the low end and the rest at the high end. Different
  splits give different (all exact) factorizations; `factorize` picks the
  best conditioned one.
  """
  (ca, la), (cb, lb) = a, b
  n = ca.size - cb.size + 1  # number of quotient coefficients
  cancel = list(range(bottom)) + list(range(ca.size - (n - bottom), ca.size))
  # (q b)[k] for quotient support starting at la - lb: a Toeplitz system.
  conv = np.zeros((ca.size, n))
  for j in range(n):
    conv[j:j + cb.size, j] = cb
  m = conv[cancel]
  if abs(np.linalg.det(m)) < 1e-12 * max(1.0, np.abs(m).max() ** n):
    return None
  q = np.linalg.solve(m, ca[cancel])
  r = ca - conv @ q
  r[cancel] = 0.0  # exactly cancelled by construction
  return (q, la - lb), _trim(r, la)


def _floats(c):
  return tuple(float(v) for v in c)


def _monomial(p):
  c, lo = p
  return c.size == 1


def _inv_monomial(p):
  c, lo = p
  return np.array([1.0 / c[0]]), -lo


def _polyphase(wavelet):
  """Analysis polyphase matrix for PyWavelets' periodized dwt.

  pywt computes out[n] = sum_j f[j] x[2n + F/2 - j] (F = filter length), so
  the even/odd components enter with taps f[F/2 + 2n - 2k] and
  f[F/2 - 1 + 2n - 2k - ...]; written as Laurent polynomials in the
  convention above (coefficient of z^p multiplies x[n + p]).
  """
  rows = []
  for f in (wavelet.dec_lo, wavelet.dec_hi):
    f = np.asarray(f, np.float64)
    size = f.size
    half = size // 2
    # out[n] = sum_m f[half + 2n - m] x[m]; m = 2(n + p) + parity.
    row = []
    for parity in (0, 1):
      powers, taps = [], []
      for j in range(size):
        m_rel = half - j  # x index relative to 2n
        if (m_rel - parity) % 2 == 0:
          powers.append((m_rel - parity) // 2)
          taps.append(f[j])
      lo = min(powers)
      c = np.zeros(max(powers) - lo + 1)
      for p, t in zip(powers, taps):
        c[p - lo] += t
      row.append(_trim(c, lo))
    rows.append(row)
  return rows


def _divide_state(state, bottom):
  """One Euclidean step on the first row: the longer entry is reduced.

  Column ops keep the product P E_1 ... E_k; the forward transform applies
  the inverses, so the recorded step adds +q (not -q).
  """
  a, b, c, d, steps = state
  # Reduce the longer entry of the first row by the shorter one; the same
  # column operation updates the second row. `first` says which column
  # (0: a/c reduced, 1: b/d reduced) so one code path serves both.
  first = 0 if a[0].size >= b[0].size else 1
  cols = [[a, c], [b, d]]
  num, other = cols[first], cols[1 - first]
  res = _divide(num[0], other[0], bottom)
  if res is None:
    return None
  q, num[0] = res
  num[1] = _sub(num[1], _mul(q, other[1]))
  (a, c), (b, d) = cols
  # first 0: o += q e (step on channel 1); first 1: e += q o (channel 0).
  return a, b, c, d, steps + (Step(1 - first, _floats(q[0]), q[1]),)


def _finish(state):
  """Clears the last off-diagonal entry: (steps, swap, scales, shifts)."""
  a, b, c, d, steps = state
  # [[a, 0], [c, d]]: clear c with column 1; [[0, b], [c, d]]: clear d with
  # column 0 (the two diagonal entries then swap places).
  swap = b[0].size != 0
  column, (out_a, out_d), clear, pivot = (
      (0, (b, c), d, c) if swap else (1, (a, d), c, d))
  if not (_monomial(out_a) and _monomial(out_d)):
    return None
  q = _mul(clear, _inv_monomial(pivot))
  if q[0].size:
    steps += (Step(column, _floats(q[0]), q[1]),)
  scales = (float(out_a[0][0]), float(out_d[0][0]))
  shifts = (int(out_a[1]), int(out_d[1]))
  return steps, swap, scales, shifts


def _growth(steps):
  """Round-off amplification bound of a list of lifting steps (log)."""
  return sum(np.log1p(sum(abs(t) for t in s.taps)) for s in steps)


def _state_score(state):
  a, b, c, d, steps = state
  size = max(np.abs(p[0]).max() if p[0].size else 0.0 for p in (a, b, c, d))
  return _growth(steps) + np.log1p(size)


def _take(x, start, stop, axis):
  index = [slice(None)] * x.ndim
  index[axis % x.ndim] = slice(start, stop)
  return x[tuple(index)]


def _lift(acc, src, step, cast, sign, axis, xp):
  """acc + sign * sum_i taps[i] * src[n + lo + i] (periodic in n).

  The circular shifts read from one wrap-padded copy of `src` with plain
  static slices: measured 20-40 % faster under XLA:CPU than one jnp.roll
  (a select per element) per tap.
  """
  n = src.shape[axis]
  lo = min(step.lo, 0)
  hi = max(step.lo + len(step.taps) - 1, 0)
  if -lo > n or hi > n:  # tiny signal, long filter: wraps more than once
    for i, tap in enumerate(step.taps):
      acc = acc + cast(sign * tap) * xp.roll(src, -(step.lo + i), axis=axis)
    return acc
  parts = [_take(src, n + lo, n, axis)] if lo else []
  parts += [src, _take(src, 0, hi, axis)] if hi else [src]
  ext = xp.concatenate(parts, axis=axis) if len(parts) > 1 else src
  for i, tap in enumerate(step.taps):
    start = step.lo + i - lo
    acc = acc + cast(sign * tap) * _take(ext, start, start + n, axis)
  return acc


def _roll(x, shift, axis, xp):
  # Most factorizations (haar, db2, db6, ...) end with zero shifts: skip the
  # roll so no slice/concatenate pair is traced for them.
  return xp.roll(x, shift, axis=axis) if shift else x


def analysis(even, odd, lift, axis=-1, xp=np):
  """Forward lifting of polyphase signals along `axis` -> (approx, detail).

  Works for numpy and jax.numpy (`xp`); taps are cast to the signals' dtype
  so float32 inputs are computed in float32.
  """
  cast = np.dtype(even.dtype).type
  chans = [even, odd]
  for s in lift.steps:
    chans[s.target] = _lift(chans[s.target], chans[1 - s.target], s, cast,
                            1.0, axis, xp)
  a, d = (chans[1], chans[0]) if lift.swap else (chans[0], chans[1])
  a = cast(lift.scales[0]) * _roll(a, -lift.shifts[0], axis, xp)
  d = cast(lift.scales[1]) * _roll(d, -lift.shifts[1], axis, xp)
  return a, d


def synthesis(a, d, lift, axis=-1, xp=np):
  """Inverse of `analysis`: (approx, detail) -> (even, odd)."""
  cast = np.dtype(a.dtype).type
  a = _roll(a * cast(1.0 / lift.scales[0]), lift.shifts[0], axis, xp)
  d = _roll(d * cast(1.0 / lift.scales[1]), lift.shifts[1], axis, xp)
  chans = [d, a] if lift.swap else [a, d]
  for s in reversed(lift.steps):
    chans[s.target] = _lift(chans[s.target], chans[1 - s.target], s, cast,
                            -1.0, axis, xp)
  return chans[0], chans[1]


def _replay_error(lift, wavelet):
  """Max error of the float64 lifting replay against pywt.dwt (periodized)."""
  rng = np.random.default_rng(0)
  n = max(16, 2 * len(wavelet.dec_lo))
  n += n % 2
  x = rng.standard_normal((4, n))
  ref_a, ref_d = pywt.dwt(x, wavelet, mode="periodization", axis=-1)
  a, d = analysis(x[:, 0::2], x[:, 1::2], lift)
  err64 = max(np.abs(a - ref_a).max(), np.abs(d - ref_d).max())
  # Float32 forward and round trip: the figure of merit for choosing
  # between factorizations (large lifting taps amplify round-off).
  x32 = x.astype(np.float32)
  a32, d32 = analysis(x32[:, 0::2], x32[:, 1::2], lift)
  e32, o32 = synthesis(a32, d32, lift)
  err32 = max(np.abs(a32 - ref_a).max(), np.abs(d32 - ref_d).max(),
              np.abs(e32 - x[:, 0::2]).max(), np.abs(o32 - x[:, 1::2]).max())
  return err64, err32


def _candidates(mat, beam=48, keep=64):
  """Exact factorizations, best conditioned first (beam search).

  Each Euclidean division can leave its remainder at either end of the
  support (or split); all choices are exact but their round-off differs
  widely (db6: taps from 10 to 1e4). A beam over the choices, ranked by the
  growth of the steps so far and the size of what is left, finds
  well-conditioned ones for long filters where exhaustive search explodes.
  """
  states = [(mat[0][0], mat[0][1], mat[1][0], mat[1][1], ())]
  done = []
  while states:
    children = []
    for state in states:
      a, b = state[0], state[1]
      if not (a[0].size and b[0].size):
        res = _finish(state)
        if res is not None:
          done.append(res)
        continue
      n = abs(a[0].size - b[0].size) + 1
      for bottom in range(n + 1):
        child = _divide_state(state, bottom)
        if child is not None:
          children.append(child)
    children.sort(key=_state_score)
    states = children[:beam]
  done.sort(key=lambda res: _growth(res[0]))
  return done[:keep]


@functools.lru_cache(maxsize=None)
def factorize(name: str) -> Lifting:
  """Lifting factorization of PyWavelets wavelet `name` (cached).

  Among the best-conditioned Euclidean factorizations (`_candidates`),
  keeps the one that reproduces pywt.dwt best in float32 (all are exact in
  exact arithmetic; their round-off differs by orders of magnitude).
  """
  wavelet = pywt.Wavelet(name)
  mat = _polyphase(wavelet)
  best = None
  for res in _candidates(mat):
    steps, swap, scales, shifts = res
    lift = Lifting(name, steps, swap, scales, shifts,
                   bool(wavelet.orthogonal))
    err64, err32 = _replay_error(lift, wavelet)
    if err64 > _CHECK_TOL:
      continue
    if best is None or err32 < best[0]:
      best = (err32, lift)
  if best is None or best[0] > _FP32_TOL:
    raise ValueError(
        f"wavelet {name!r} has no numerically exact lifting factorization: "
        "either its filters are not an exact perfect-reconstruction FIR pair "
        "('dmey') or they are so long (40+ taps: db20+, coif7+) that the "
        "Euclidean algorithm loses float64 accuracy. Use a shorter "
        "orthogonal (haar, db1-db19, sym2-sym20, coif1-coif6) or "
        "biorthogonal (biorX.Y, rbioX.Y) wavelet.")
  return best[1]
