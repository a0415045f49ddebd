"""Fourier transform: orthonormal rfft2 over H, W per channel.

Coefficients are laid out [B, C, H, W//2+1] because FFTs over the last two
axes are 2-4x faster than over axes (1, 2) on CPU (docs/environment.md#jax-notes) and are
the native layout on TPU/GPU too. kappa is the radial frequency |f| (in
FFT-index units) over its maximum; a mask that depends on kappa only is
Hermitian-symmetric, so irfft2 of the masked spectrum is the exact real
projection.

Coarse grids (`subgrids`): the bins with |f_y| < h/2 and f_x < w/2 of an
[h, w] = [H/f, W/f] grid keep their values on that grid's own orthonormal
rfft2 (the spectrum is cropped, centred on f = 0); see
docs/method.md#scale-adaptive-compute-coarse-grids.
"""
import functools

import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp


def radial_frequency(h, w):
  """|f| for the rfft2 grid [h, w//2+1] in FFT-index units."""
  fy = np.fft.fftfreq(h) * h
  fx = np.fft.rfftfreq(w) * w
  return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def rfft_weight(h, w):
  """Parseval multiplicity of rfft2 bins: the half spectrum stands for 2 bins,
  except column 0 and (for even w) the Nyquist column, which are their own
  mirror."""
  wr = w // 2 + 1
  weight = np.full((h, wr), 2.0, np.float32)
  weight[:, 0] = 1.0
  if w % 2 == 0:
    weight[:, -1] = 1.0
  return weight


@kamp.register("fourier")
def build(shape):
  h, w, c = shape
  kappa = kamp.radial_kappa(radial_frequency(h, w), c)
  weight = np.broadcast_to(rfft_weight(h, w), kappa.shape).copy()

  def forward(x):
    kamp.check_input(x, shape, "fourier")
    x = jnp.transpose(x.astype(jnp.float32), (0, 3, 1, 2))
    return jnp.fft.rfft2(x, norm="ortho")

  def inverse(coef):
    x = jnp.fft.irfft2(coef, s=(h, w), norm="ortho")
    return jnp.transpose(x, (0, 2, 3, 1)).astype(jnp.float32)

  return kamp.KTransform(
      forward=forward, inverse=inverse, kappa=kappa, weight=weight,
      name="fourier", shape=shape, orthonormal=True,
      subgrids=functools.cache(lambda: _subgrids(shape, kappa)))


def _subgrids(shape, kappa):
  """One `kamp.Subgrid` per dyadic factor: the centred crop of the spectrum.

  With norm="ortho" on both grids a bin keeps its value: the unnormalized
  FFTs differ by sqrt(h w / (H W)) = 1 / f, which is exactly what the two
  ortho normalizations put in, so white noise stays white. The small grid's
  own Nyquist row (f_y = -h/2) and column (f_x = w/2) are left out of the
  box: there the small grid folds f and -f onto one self-conjugate bin,
  while on the full grid they are two independent bins.
  """
  h, w, c = shape
  grids = []
  for f in kamp.dyadic_factors(h, w):
    hs, ws = h // f, w // f
    fy = np.rint(np.fft.fftfreq(hs) * hs).astype(np.int64)  # row -> f_y
    rows = np.flatnonzero(2 * np.abs(fy) < hs)  # small-grid rows in the box
    cols = np.flatnonzero(2 * np.arange(ws // 2 + 1) < ws)
    full_rows = fy[rows] % h  # f_x of a column is its index on both grids
    box = np.zeros(kappa.shape, bool)
    box[:, full_rows[:, None], cols[None, :]] = True
    small_kappa = kappa[:, (fy % h)[:, None], np.arange(ws // 2 + 1)[None, :]]
    small = build((hs, ws, c))._replace(kappa=small_kappa.copy())
    grids.append(kamp.Subgrid(
        factor=f, transform=small, box=box,
        gather=functools.partial(
            _move, src=(full_rows, cols), dst=(rows, cols),
            out=(c, hs, ws // 2 + 1)),
        scatter=functools.partial(
            _move, src=(rows, cols), dst=(full_rows, cols),
            out=(c, h, w // 2 + 1))))
  return tuple(grids)


def _move(coef, src, dst, out):
  """Zeros [B, *out] with the bins at src (rows, cols) of coef put at dst."""
  values = coef[:, :, src[0][:, None], src[1][None, :]]
  zeros = jnp.zeros((coef.shape[0],) + tuple(out), coef.dtype)
  return zeros.at[:, :, dst[0][:, None], dst[1][None, :]].set(values)
