"""Fourier transform: orthonormal rfft2 over H, W per channel.

Coefficients are laid out [B, C, H, W//2+1] because FFTs over the last two
axes are 2-4x faster than over axes (1, 2) on CPU (docs/environment.md#jax-notes) and are
the native layout on TPU/GPU too. kappa is the radial frequency |f| (in
FFT-index units) over its maximum; a mask that depends on kappa only is
Hermitian-symmetric, so irfft2 of the masked spectrum is the exact real
projection.
"""
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
      name="fourier", shape=shape, orthonormal=True)
