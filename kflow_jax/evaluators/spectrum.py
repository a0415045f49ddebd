"""Radially averaged power spectra of image sets and the spectrum error.

K-Flow generates coarse-to-fine along kappa, so the first thing to check
is whether each frequency band carries the right energy. The power
spectrum is |rfft2(x, ortho)|^2 per image and channel (the `fourier`
K-amplitude's transform), averaged over images and channels, then over
the rfft2 coefficients of each radial bin (weighted by their Parseval
multiplicity, so the half spectrum stands for the full one).

Radial bins have width one FFT index: bin k holds |f| in [k - 1/2, k + 1/2),
the resolution of the frequency grid. A bin's kappa is the mean kappa of
its coefficients, with kappa = |f| / max |f| exactly as
`kamp.fourier` defines it (`kamp.radial_kappa`), so band cut-offs in kappa
units select the same frequencies here as in the model.

spectrum error of a bin = |log(P_samples / P_reference)| (natural log; 0.1
is about a 10 % power mismatch); per band and for the finest third of
frequencies (kappa >= 2/3) it is averaged over the bins in that range.
"""
from typing import NamedTuple, Optional, Sequence

import numpy as np

from kflow_jax import kamp
from kflow_jax.evaluators import validate
from kflow_jax.kamp import bands
from kflow_jax.kamp import fourier

# The finest third of frequencies, in kappa units.
FINE_KAPPA = 2.0 / 3.0
# Power floor before the log: pixels are in [-1, 1], so a bin with power
# below this carries no visible energy, and the floor keeps constant
# images (zero power off DC) finite.
_POWER_FLOOR = 1e-10


class RadialBins(NamedTuple):
  """index int [H, W//2+1] (bin of each rfft2 coefficient), kappa float64
  [B] (mean kappa per bin), weight float64 [H, W//2+1] (Parseval)."""
  index: np.ndarray
  kappa: np.ndarray
  weight: np.ndarray


def radial_bins(h: int, w: int) -> RadialBins:
  """Unit-width radial bins of the rfft2 grid of an h x w image."""
  r = fourier.radial_frequency(h, w)
  kappa = kamp.radial_kappa(r, 1)[0].astype(np.float64)
  index = np.floor(r + 0.5).astype(np.int64)
  weight = fourier.rfft_weight(h, w).astype(np.float64)
  count = np.bincount(index.ravel(), weight.ravel())
  bin_kappa = np.bincount(index.ravel(), (weight * kappa).ravel()) / count
  return RadialBins(index, bin_kappa, weight)


def power_spectrum(images) -> np.ndarray:
  """Radially averaged power float64 [B] of images [N, H, W, C]."""
  x = validate.images(images)
  h, w = x.shape[1:3]
  rb = radial_bins(h, w)
  power = np.zeros(rb.index.shape)  # [H, W//2+1], summed over images
  for start in range(0, x.shape[0], 256):  # chunks bound the memory
    coef = np.fft.rfft2(x[start:start + 256].astype(np.float64), axes=(1, 2),
                        norm="ortho")
    power += np.sum(np.mean(np.abs(coef) ** 2, axis=3), axis=0)
  power /= x.shape[0]
  total = np.bincount(rb.index.ravel(), (power * rb.weight).ravel())
  return total / np.bincount(rb.index.ravel(), rb.weight.ravel())


class SpectrumError(NamedTuple):
  """per_bin [B], kappa [B] (bin kappa), mean (over bins), fine (bins with
  kappa >= 2/3), bands [S] (NaN for a band holding no bin)."""
  per_bin: np.ndarray
  kappa: np.ndarray
  mean: float
  fine: float
  bands: np.ndarray


def band_means(values, kappa, cutoffs) -> np.ndarray:
  """Mean of per-bin values over the bins of each band: float64 [S].

  Bins go to bands by their kappa with `kamp.bands.band_index` (band s
  holds r_s <= kappa < r_{s+1}). A band narrower than one radial bin holds
  none and gets NaN: the spectrum cannot resolve it at this image size.
  """
  c = bands.validate_cutoffs(cutoffs)
  idx = bands.band_index(kappa, c)
  v = np.asarray(values, np.float64)
  out = np.full(len(c) - 1, np.nan)
  for s in range(len(c) - 1):
    if np.any(idx == s):
      out[s] = v[idx == s].mean()
  return out


def spectrum_error(samples, reference,
                   cutoffs: Optional[Sequence[float]] = None
                   ) -> SpectrumError:
  """|log power ratio| of samples vs reference per radial bin and band.

  Args:
    samples: float [N, H, W, C] in [-1, 1].
    reference: float [M, H, W, C], the same H, W, C (N and M may differ).
    cutoffs: band edges in kappa units, 0 = r_0 < ... < r_S = 1 (as in
      config.kflow / kamp.bands); None: one band (0, 1).
  """
  a = validate.images(samples, "samples")
  b = validate.images(reference, "reference")
  validate.same_image_shape(a, b)
  pa = np.maximum(power_spectrum(a), _POWER_FLOOR)
  pb = np.maximum(power_spectrum(b), _POWER_FLOOR)
  err = np.abs(np.log(pa / pb))
  kappa = radial_bins(*a.shape[1:3]).kappa
  fine = err[kappa >= FINE_KAPPA]
  return SpectrumError(
      per_bin=err, kappa=kappa, mean=float(err.mean()),
      fine=float(fine.mean()) if fine.size else float("nan"),
      bands=band_means(err, kappa, (0.0, 1.0) if cutoffs is None else cutoffs))
