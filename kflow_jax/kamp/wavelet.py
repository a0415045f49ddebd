"""Wavelet transform: multi-level periodized 2-D DWT, in jnp.

Each level is, per axis, the periodized two-channel filter bank of
PyWavelets written as static stencils: approximation and detail are
  a[i] = sum_k g_k x[2i + k],  d[i] = sum_k h_k x[2i + k]   (indices mod n),
and the inverse is the same with the synthesis taps on (a, d). The taps are
read off PyWavelets' own periodized transform (`filter_bank`), so they are
dec_lo/dec_hi/rec_lo/rec_hi exactly, in float64, cast once to float32.

Why stencils and not the lifting factorization (`kamp.lifting`): under
XLA:CPU each lifting step needs the previous step's output at shifted
positions, so XLA either materializes every step (a wrap-padded copy per
step) or re-computes the whole chain inside every consumer; db6 at 3 levels
became ~100 fusions and 3.8k HLO ops, with ~4x redundant arithmetic and a
~5-25 s compile. A stencil pass reads its input once and writes its output
once (one fusion per axis), which is what bounds the speed on CPU.

Along an axis of length <= `_MATMUL_MAX` the level is one matmul with the
dense periodized matrix (again PyWavelets' float64 values): at these sizes
it is as fast as the stencil, compiles in a fraction of the time and covers
tiny lengths where a long filter wraps around several times.

Where the time goes (XLA:CPU, forward + inverse of 3 levels): the arithmetic
is small, so the cost is the number of passes over memory and of ops, each
with its own dispatch and thread-pool hand-off. At 32x32 the 12 dots are
the floor; laying the planes out as [H, B*C, W] there (see `build`) removed
the transpose before and after every H-axis dot (24 -> 18 ops, 1.4-1.55x
faster). At 256x256 the stencils keep [B*C, H, W], and long filters read
one wrap-padded window per pass (see `_correlate`: db6 73 -> 47 ops).

Coefficients use the packed (Mallat) layout of `pywt.coeffs_to_array`:
same shape [B, H, W, C] as x; the final approximation is the top-left
[H / 2^L, W / 2^L] block; at each level the detail that is high-pass along
H ('da', pywt's cH) sits below the approximation, high-pass along W ('ad',
cV) to its right and 'dd' (cD) diagonally. Values equal
`pywt.wavedec2(x, wavelet, mode="periodization", level=L, axes=(1, 2))`.

kappa: 0 for the final approximation; the detail of level l (l = L is the
coarsest, l = 1 the finest) gets (L - l + 1) / L, so the L detail levels
from coarse to fine are 1/L, 2/L, ..., 1.

Coarse grids (`subgrids`): the top-left [H/2^m, W/2^m] block of the packed
coefficients is the packed (L - m)-level DWT of the level-m approximation,
an image on that grid (m = L: the final approximation itself); see
docs/method.md#scale-adaptive-compute-coarse-grids.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pywt

from kflow_jax import kamp

# Axes up to this length use the dense matrix (measured on XLA:CPU: at 32
# both forms run in the same time but the matmul compiles ~5x faster; at
# 256 the O(n) stencil is ~4x faster than the O(n^2) matmul).
_MATMUL_MAX = 64
# Stencils with at least this many taps per polyphase component (db4+)
# read one wrap-padded copy of their input; shorter ones wrap only at the
# ends (see `_correlate`; measured at 256x256).
_WINDOW_MIN_TAPS = 4
# Filter-bank entries below this are exact zeros up to float64 round-off.
_ZERO_TOL = 1e-13
# A filter bank whose periodized synthesis misses the inverse of its
# analysis by more than this is not perfect-reconstruction ('dmey').
_PR_TOL = 1e-9


class FilterBank(NamedTuple):
  """Periodized DWT of one wavelet as stencils (see module docstring).

  analysis: (g, h), each a tuple of (k, tap): a[i] = sum g_k x[2i + k].
  synthesis: ((ua0, ud0), (ua1, ud1)): x[2i + p] = sum ua_pk a[i + k]
    + ud_pk d[i + k].
  """
  name: str
  analysis: tuple
  synthesis: tuple
  orthogonal: bool


@functools.lru_cache(maxsize=None)
def _matrices(name, n):
  """float64 (A, S) with [a, d] = x @ A and x = [a, d] @ S (PyWavelets)."""
  wavelet = pywt.Wavelet(name)
  half = n // 2
  a, d = pywt.dwt(np.eye(n), wavelet, mode="periodization", axis=-1)
  zero = np.zeros((half, half))
  synth = [pywt.idwt(np.eye(half), zero, wavelet, mode="periodization",
                     axis=-1),
           pywt.idwt(zero, np.eye(half), wavelet, mode="periodization",
                     axis=-1)]
  return np.concatenate([a, d], axis=1), np.concatenate(synth, axis=0)


def _row_taps(row, center, period):
  """{k: row[center + k]} over the nonzeros, k taken in (-period/2, period/2]."""
  taps = {}
  for m in np.nonzero(np.abs(row) > _ZERO_TOL)[0]:
    k = (int(m) - center + period // 2) % period - period // 2
    taps[k] = float(row[m])
  return tuple(sorted(taps.items()))


@functools.lru_cache(maxsize=None)
def filter_bank(name: str) -> FilterBank:
  """Stencils of PyWavelets' periodized DWT for wavelet `name` (cached).

  Read off the dense float64 matrices at a length where no tap wraps, then
  checked: the stencils rebuild both matrices at that length and at a
  second one, and synthesis inverts analysis (else ValueError).
  """
  wavelet = pywt.Wavelet(name)
  size = len(wavelet.dec_lo)
  n = 4 * size + 8  # even, and every stencil fits well inside
  a_mat, s_mat = _matrices(name, n)
  half, i = n // 2, n // 4
  analysis = tuple(_row_taps(a_mat[:, col], 2 * i, n)
                   for col in (i, half + i))
  synthesis = tuple(
      tuple(_row_taps(s_mat[rows, 2 * i + p], i, half)
            for rows in (slice(0, half), slice(half, n)))
      for p in (0, 1))
  bank = FilterBank(name, analysis, synthesis, bool(wavelet.orthogonal))
  for m in (n, n + 2):
    a_mat, s_mat = _matrices(name, m)
    if (np.abs(_dense(bank, m)[0] - a_mat).max() > _PR_TOL
        or np.abs(_dense(bank, m)[1] - s_mat).max() > _PR_TOL
        or np.abs(a_mat @ s_mat - np.eye(m)).max() > _PR_TOL):
      raise ValueError(
          f"wavelet {name!r} is not an exact perfect-reconstruction FIR "
          "filter bank under periodization (its inverse would not undo the "
          "forward transform, e.g. 'dmey'); use an orthogonal (haar, dbN, "
          "symN, coifN) or biorthogonal (biorX.Y, rbioX.Y) wavelet.")
  return bank


def _dense(bank, n):
  """(A, S) rebuilt from the stencils at length n (taps wrap mod n)."""
  half = n // 2
  a_mat, s_mat = np.zeros((n, n)), np.zeros((n, n))
  for out, taps in enumerate(bank.analysis):
    for i in range(half):
      for k, c in taps:
        a_mat[(2 * i + k) % n, out * half + i] += c
  for p, pair in enumerate(bank.synthesis):
    for src, taps in enumerate(pair):
      for i in range(half):
        for k, c in taps:
          s_mat[src * half + (i + k) % half, 2 * i + p] += c
  return a_mat, s_mat


def _slice(x, start, stop, axis, step=1):
  index = [slice(None)] * x.ndim
  index[axis] = slice(start, stop, step)
  return x[tuple(index)]


def _window(x, start, stop, axis):
  """x[start:stop] along `axis` read periodically (any number of wraps)."""
  n = x.shape[axis]
  parts, pos = [], start
  while pos < stop:
    r = pos % n
    take = min(n - r, stop - pos)
    parts.append(_slice(x, r, r + take, axis))
    pos += take
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis)


def _correlate(srcs, taps, count, stride, axis):
  """outs[o][i] = sum_s sum_(k, c) in taps[o][s] c * srcs[s][stride i + k].

  Periodic in the sources' length, for i < count. Two plans, chosen by the
  number of taps per polyphase component, (kmax - kmin + 1) / stride
  (analysis: haar 1, db2 2, db3 3, db4 4, db6 6; synthesis 1, 3, 3, 5, 7):

  - short filters (< `_WINDOW_MIN_TAPS`): the interior outputs read plain
    strided slices of the sources and only the few outputs at each end
    whose taps wrap read a small periodic window; XLA fuses each segment,
    and no padded copy of the source is made.
  - long filters: each source is copied once into its wrap-padded window,
    held materialized by an optimization barrier, and every output is one
    fused sum of strided slices of the windows. With the three segments
    XLA:CPU emitted, for db6 at 256x256 (3 levels, forward + inverse), 73
    ops with unfused concatenate copies and a 5 s compile; windowed, 47 ops,
    a 2.3 s compile and 1.2-1.4x less time (median of 25-45 interleaved
    runs; db4 1.4x). For db2 and db3 the window's extra copy cost more than
    it saved (0.85-1.0x). Without the barrier XLA fuses the padding
    concatenate into every tap read (a select per tap and element, 2-3x
    slower for db6).
  """
  n = srcs[0].shape[axis]
  ks = [k for out in taps for src in out for k, _ in src]
  kmin, kmax = min(ks), max(ks)
  cast = np.dtype(srcs[0].dtype).type

  def band(pieces, base, first, num):
    outs = []
    for out in taps:
      acc = None
      for piece, src in zip(pieces, out):
        for k, c in src:
          start = stride * first + k - base
          term = cast(c) * _slice(piece, start,
                                  start + stride * (num - 1) + 1, axis, stride)
          acc = term if acc is None else acc + term
      outs.append(acc)
    return outs

  def windowed(first, num, barrier=False):
    start = stride * first + kmin
    stop = stride * (first + num - 1) + kmax + 1
    pieces = [_window(s, start, stop, axis) for s in srcs]
    if barrier:
      pieces = jax.lax.optimization_barrier(pieces)
    return band(pieces, start, first, num)

  if (kmax - kmin + 1) / stride >= _WINDOW_MIN_TAPS:
    return windowed(0, count, barrier=True)
  i0 = min(count, max(0, -(kmin // stride)))  # first i with no wrap
  i1 = min(count, max(i0, (n - 1 - kmax) // stride + 1))  # last + 1
  segments = []
  for first, num, wraps in ((0, i0, True), (i0, i1 - i0, False),
                            (i1, count - i1, True)):
    if num > 0:
      segments.append(windowed(first, num) if wraps
                      else band(srcs, 0, first, num))
  return [seg[0] if len(seg) == 1 else jnp.concatenate(seg, axis)
          for seg in zip(*segments)]


def _matmul(x, mat, axis):
  """x @ mat along `axis` of a 3-D array ([H, P, W] or [P, H, W]).

  Axis 0 and the last axis are plain 2-D dots on a reshape, (mat^T) @
  x [n, rest] and x [rest, n] @ mat, with no transpose; a middle axis (H of
  [P, H, W]) makes XLA transpose the operand and the result around the dot.
  HIGHEST: on GPU the default f32 matmul may round to TF32 (1e-3 error).
  """
  hi = jax.lax.Precision.HIGHEST
  if axis == 0:
    n = x.shape[0]
    return jnp.dot(mat.T, x.reshape(n, -1), precision=hi).reshape(x.shape)
  if axis == x.ndim - 1:
    return jnp.matmul(x, mat, precision=hi)
  return jnp.einsum("bhw,hk->bkw", x, mat, precision=hi)


def analysis_axis(x, bank, axis):
  """One periodized DWT level along `axis`: concat([a, d]) on that axis."""
  n = x.shape[axis]
  if n <= _MATMUL_MAX:
    return _matmul(x, _matrices(bank.name, n)[0].astype(np.float32), axis)
  a, d = _correlate([x], [[g] for g in bank.analysis], n // 2, 2, axis)
  return jnp.concatenate([a, d], axis)


def synthesis_axis(c, bank, axis):
  """Inverse of `analysis_axis`."""
  n = c.shape[axis]
  if n <= _MATMUL_MAX:
    return _matmul(c, _matrices(bank.name, n)[1].astype(np.float32), axis)
  half = n // 2
  even, odd = _correlate([_slice(c, 0, half, axis), _slice(c, half, n, axis)],
                         bank.synthesis, half, 1, axis)
  # Interleave even/odd samples back: stack on a new axis after `axis`.
  return jnp.stack([even, odd], axis=axis + 1).reshape(c.shape)


def _dwt_level(x, bank, axes):
  """One 2-D level along axes (H, W): packed [[aa, ad], [da, dd]]."""
  return analysis_axis(analysis_axis(x, bank, axes[0]), bank, axes[1])


def _idwt_level(c, bank, axes):
  """Inverse of `_dwt_level`."""
  return synthesis_axis(synthesis_axis(c, bank, axes[1]), bank, axes[0])


def _corner(x, axes, h, w, high=(False, False)):
  """x[:h, :w] (or [h:] / [w:] where `high`) along axes (H, W)."""
  index = [slice(None)] * x.ndim
  index[axes[0]] = slice(h, None) if high[0] else slice(0, h)
  index[axes[1]] = slice(w, None) if high[1] else slice(0, w)
  return x[tuple(index)]


def _with_top_left(c, block, axes):
  """c with its top-left block (along axes H, W) replaced.

  Slices and concatenates, not `.at[].set`: XLA fuses them into their
  consumer, while the dynamic-update-slice made it copy whole buffers
  (measured 2x slower for db6 at 256x256 with forward and inverse in one
  jit).
  """
  h, w = block.shape[axes[0]], block.shape[axes[1]]
  top = jnp.concatenate([block, _corner(c, axes, h, w, (False, True))],
                        axis=axes[1])
  return jnp.concatenate([top, _slice(c, h, None, axes[0])], axis=axes[0])


def dwt2(x, bank, levels, axes=(1, 2)):
  """Packed multi-level periodized DWT of a 3-D x along axes (H, W).

  Each level's output already sits in the packed layout; only the coarse
  quarter is transformed again and written back.
  """
  out = _dwt_level(x, bank, axes)
  if levels > 1:
    h, w = x.shape[axes[0]] // 2, x.shape[axes[1]] // 2
    sub = dwt2(_corner(out, axes, h, w), bank, levels - 1, axes)
    out = _with_top_left(out, sub, axes)
  return out


def idwt2(c, bank, levels, axes=(1, 2)):
  """Inverse of `dwt2`."""
  if levels > 1:
    h, w = c.shape[axes[0]] // 2, c.shape[axes[1]] // 2
    sub = idwt2(_corner(c, axes, h, w), bank, levels - 1, axes)
    c = _with_top_left(c, sub, axes)
  return _idwt_level(c, bank, axes)


def packed_kappa(h, w, levels):
  """Static scale grid [h, w] of the packed layout (see module docstring)."""
  kappa = np.zeros((h, w), np.float32)
  for level in range(1, levels + 1):  # finest first; coarser ones overwrite
    bh, bw = h >> (level - 1), w >> (level - 1)
    kappa[:bh, :bw] = (levels - level + 1) / levels
  kappa[:h >> levels, :w >> levels] = 0.0
  return kappa


def _check_wavelet(name):
  if not isinstance(name, str) or name not in pywt.wavelist(kind="discrete"):
    families = pywt.families(short=True)
    raise ValueError(
        f"Unknown wavelet {name!r}; use a PyWavelets discrete wavelet name, "
        f"e.g. 'haar', 'db6', 'sym4', 'coif2', 'bior4.4' (families: "
        f"{[f for f in families if f in ('haar', 'db', 'sym', 'coif', 'bior', 'rbio')]}"
        "; see pywt.wavelist(kind='discrete')).")


def _check_levels(levels, shape):
  h, w, _ = shape
  if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) \
      or levels < 1:
    raise ValueError(f"levels must be an int >= 1, got {levels!r}.")
  max_levels = 0
  while h % (2 << max_levels) == 0 and w % (2 << max_levels) == 0:
    max_levels += 1
  if levels > max_levels:
    m = 2 ** int(levels)
    hint = (f"use levels <= {max_levels} for this shape" if max_levels
            else "this shape takes no periodized level at all")
    raise ValueError(
        f"wavelet with levels={levels} needs H and W divisible by "
        f"2**{levels} = {m}, got shape {shape}; {hint}, or a shape such as "
        f"({-(-h // m) * m}, {-(-w // m) * m}, {shape[2]}).")
  return int(levels)


@kamp.register("wavelet")
def build(shape, wavelet="db6", levels=3):
  _check_wavelet(wavelet)
  levels = _check_levels(levels, shape)
  bank = filter_bank(wavelet)
  h, w, c = shape
  kappa = np.repeat(packed_kappa(h, w, levels)[:, :, None], c, axis=2)

  # The transform runs on P = B*C planes with W innermost: with C (often
  # 3) innermost every pass would vectorize over 3 lanes; with W innermost
  # over whole rows (a [H, W, P] layout, with both axes non-minor, measured
  # 2x slower at 256x256). Where H sits is chosen by which path the level-1
  # axes take (measured, interleaved, forward + inverse):
  # - both axes matmul (<= _MATMUL_MAX): [H, P, W]. Both dots are then plain
  #   2-D dots on a reshape; [P, H, W] put a transpose before and after each
  #   H-axis dot (24 passes for 3 levels instead of 18, 1.3-1.5x the time
  #   at 32x32).
  # - stencils: [P, H, W]. An H-axis stencil then reads rows inside one
  #   256 KB plane; in [H, P, W] its 12 rows (db6) are P*W floats apart and
  #   the pass ran 1.3-1.6x slower at 256x256.
  if max(h, w) <= _MATMUL_MAX:
    perm, axes = (1, 0, 3, 2), (0, 2)  # [B, H, W, C] -> [H, B, C, W]
  else:
    perm, axes = (0, 3, 1, 2), (1, 2)  # -> [B, C, H, W]
  inv_perm = tuple(int(i) for i in np.argsort(perm))

  def to_planes(x):
    y = jnp.transpose(x, perm)
    return y.reshape((h, -1, w) if axes == (0, 2) else (-1, h, w))

  def from_planes(y):
    y = y.reshape((h, -1, c, w) if axes == (0, 2) else (-1, c, h, w))
    return jnp.transpose(y, inv_perm)

  def forward(x):
    kamp.check_input(x, shape, "wavelet")
    return from_planes(
        dwt2(to_planes(x.astype(jnp.float32)), bank, levels, axes))

  def inverse(coef):
    kamp.check_input(coef, shape, "wavelet")
    return from_planes(
        idwt2(to_planes(coef.astype(jnp.float32)), bank, levels, axes))

  return kamp.KTransform(
      forward=forward, inverse=inverse, kappa=kappa,
      weight=np.ones(shape, np.float32), name="wavelet", shape=shape,
      orthonormal=bank.orthogonal,
      subgrids=functools.cache(
          lambda: _subgrids(shape, wavelet, levels, kappa)))


def _subgrids(shape, wavelet, levels, kappa):
  """One `kamp.Subgrid` per level m = 1..L: the level-m approximation.

  dwt2 transforms the top-left quarter again at every level, so the
  top-left [H/2^m, W/2^m] block of the L-level packed layout is, value for
  value, the (L - m)-level packed DWT of the level-m approximation; at
  m = L the block is the approximation itself (the identity transform).
  """
  h, w, c = shape
  grids = []
  for m in range(1, levels + 1):
    f = 2 ** m
    hs, ws = h // f, w // f
    if m < levels:
      small = build((hs, ws, c), wavelet=wavelet, levels=levels - m)
    else:
      small = kamp.get("identity", (hs, ws, c))
    grids.append(kamp.corner_subgrid(f, small, kappa, row_axis=0))
  return tuple(grids)
