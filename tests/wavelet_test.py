"""Lifting wavelet: equals PyWavelets periodization, inverts, Parseval."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from kflow_jax import kamp
from kflow_jax.kamp import lifting
from kflow_jax.kamp import wavelet as wavelet_lib

WAVELETS = ["haar", "db2", "db6", "sym4", "coif2", "bior2.2", "bior4.4"]


def _pywt_packed(x, name, levels):
  with warnings.catch_warnings():  # pywt warns when levels exceed its max
    warnings.simplefilter("ignore")
    coeffs = pywt.wavedec2(x.astype(np.float64), name, mode="periodization",
                           level=levels, axes=(1, 2))
  return pywt.coeffs_to_array(coeffs, axes=(1, 2))[0]


@pytest.mark.parametrize("name", WAVELETS + ["rbio3.3", "db10", "sym8"])
def test_lifting_matches_pywt_dwt_1d(name):
  x = np.random.default_rng(1).standard_normal((3, 40))
  lift = lifting.factorize(name)
  a, d = lifting.analysis(x[:, 0::2], x[:, 1::2], lift)
  ref_a, ref_d = pywt.dwt(x, name, mode="periodization", axis=-1)
  np.testing.assert_allclose(a, ref_a, atol=1e-9)
  np.testing.assert_allclose(d, ref_d, atol=1e-9)
  e, o = lifting.synthesis(a, d, lift)
  np.testing.assert_allclose(e, x[:, 0::2], atol=1e-9)
  np.testing.assert_allclose(o, x[:, 1::2], atol=1e-9)


def test_cdf97_factorization_is_the_classic_one():
  # bior4.4 is CDF 9/7: four lifting steps, |alpha| = 1.586134342.
  lift = lifting.factorize("bior4.4")
  assert len(lift.steps) == 4
  taps = sorted(abs(t) for s in lift.steps for t in s.taps)
  np.testing.assert_allclose(taps[-1], 1.586134342, rtol=1e-6)


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_coefficients_equal_pywt_periodization(name, levels):
  shape = (16, 24, 3)
  x = np.random.default_rng(levels).standard_normal((2,) + shape)
  t = kamp.get("wavelet", shape, wavelet=name, levels=levels)
  # Eager: XLA:CPU takes seconds to compile each lifting graph, while the
  # eager ops (rolls, slices) are cached across wavelets. jit is covered by
  # test_jit_matches_eager and kamp_test.
  c = np.asarray(t.forward(x.astype(np.float32)))
  ref = _pywt_packed(x, name, levels)
  rel = np.abs(c - ref).max() / np.abs(ref).max()
  assert rel < 1e-5, (name, levels, rel)
  back = np.asarray(t.inverse(c))
  np.testing.assert_allclose(back, x, atol=1e-5)


def test_jit_matches_eager():
  shape = (16, 16, 4)
  x = np.random.default_rng(3).standard_normal((2,) + shape).astype(
      np.float32)
  t = kamp.get("wavelet", shape, wavelet="db6", levels=3)
  c = jax.jit(t.forward)(x)
  np.testing.assert_allclose(c, t.forward(x), atol=1e-6)
  ref = _pywt_packed(x, "db6", 3)
  assert np.abs(c - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize("name", WAVELETS)
def test_parseval_iff_orthogonal(name):
  shape = (16, 16, 1)
  x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
  t = kamp.get("wavelet", shape, wavelet=name, levels=2)
  c = t.forward(x)
  ratio = float(jnp.sum(t.weight * c ** 2) / jnp.sum(x ** 2))
  assert t.orthonormal == pywt.Wavelet(name).orthogonal
  if t.orthonormal:
    assert abs(ratio - 1) < 1e-5
  else:
    assert abs(ratio - 1) > 1e-3  # biorthogonal: genuinely not isometric


def test_kappa_layout():
  kappa = wavelet_lib.packed_kappa(8, 8, 3)
  assert kappa[0, 0] == 0.0  # final approximation (1 x 1)
  np.testing.assert_allclose(kappa[0, 1], 1 / 3)  # coarsest detail
  np.testing.assert_allclose(kappa[2:4, 0:2], 2 / 3)
  np.testing.assert_allclose(kappa[4:, :], 1.0)  # finest detail
  np.testing.assert_allclose(kappa[:4, 4:], 1.0)
  t = kamp.get("wavelet", (8, 8, 4), wavelet="haar", levels=3)
  assert t.kappa.shape == (8, 8, 4)
  assert sorted(np.unique(t.kappa)) == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_coarse_band_is_the_approximation():
  # Projecting on kappa = 0 keeps exactly the level-L approximation.
  shape = (16, 16, 3)
  x = np.random.default_rng(2).standard_normal((1,) + shape)
  t = kamp.get("wavelet", shape, wavelet="db2", levels=2)
  low = t.inverse(t.forward(x.astype(np.float32)) * (t.kappa == 0))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    coeffs = pywt.wavedec2(x, "db2", mode="periodization", level=2,
                           axes=(1, 2))
    ref = pywt.waverec2([coeffs[0]] + [tuple(np.zeros_like(d) for d in lv)
                                       for lv in coeffs[1:]],
                        "db2", mode="periodization", axes=(1, 2))
  np.testing.assert_allclose(low, ref, atol=1e-5)


def test_bad_wavelet_options():
  with pytest.raises(ValueError, match="Unknown wavelet 'db99'"):
    kamp.get("wavelet", (16, 16, 3), wavelet="db99")
  with pytest.raises(ValueError, match="valid options"):
    kamp.get("wavelet", (16, 16, 3), wavlet="db2")
  with pytest.raises(ValueError, match="levels must be an int"):
    kamp.get("wavelet", (16, 16, 3), levels=0)
  with pytest.raises(ValueError, match=r"use levels <= 2.*\(16, 24, 3\)"):
    kamp.get("wavelet", (12, 20, 3), wavelet="haar", levels=3)
  with pytest.raises(ValueError, match="not an exact perfect-reconstruction"):
    kamp.get("wavelet", (16, 16, 3), wavelet="dmey")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "haar" else pytest.mark.slow)
    for n in ("haar", "db2", "db6", "bior4.4")])  # haar fast, the rest -m slow
def test_stencil_path_equals_pywt(monkeypatch, name):
  # Axes above _MATMUL_MAX use the periodic stencils; force them at a small
  # shape so that every level, including lengths shorter than the filter
  # (taps wrapping several times), goes through them. haar and db2 take
  # the wrap-at-the-ends plan of `_correlate`, db6 and bior4.4 the
  # wrap-padded window.
  monkeypatch.setattr(wavelet_lib, "_MATMUL_MAX", 0)
  shape = (16, 24, 3)
  x = np.random.default_rng(5).standard_normal((2,) + shape)
  t = kamp.get("wavelet", shape, wavelet=name, levels=3)
  c = np.asarray(t.forward(x.astype(np.float32)))
  ref = _pywt_packed(x, name, 3)
  assert np.abs(c - ref).max() / np.abs(ref).max() < 1e-5
  np.testing.assert_allclose(t.inverse(c), x, atol=1e-5)


def test_both_paths_under_jit_at_a_large_size():
  # 128 > _MATMUL_MAX: level 1 uses stencils, levels 2-3 the matrices.
  shape = (128, 128, 1)
  x = np.random.default_rng(6).standard_normal((2,) + shape).astype(
      np.float32)
  t = kamp.get("wavelet", shape, wavelet="db6", levels=3)
  c = jax.jit(t.forward)(x)
  ref = _pywt_packed(x, "db6", 3)
  assert np.abs(c - ref).max() / np.abs(ref).max() < 1e-5
  np.testing.assert_allclose(jax.jit(t.inverse)(c), x, atol=1e-5)


@pytest.mark.parametrize("name", ["db6", "bior4.4", "db20"])
def test_filter_bank_taps_are_the_pywt_filters(name):
  bank = wavelet_lib.filter_bank(name)
  w = pywt.Wavelet(name)
  g, h = ([c for _, c in taps] for taps in bank.analysis)
  nonzero = [c for c in w.dec_lo if abs(c) > 1e-13]
  np.testing.assert_allclose(g, nonzero[::-1], rtol=1e-12)
  assert len(h) == len([c for c in w.dec_hi if abs(c) > 1e-13])


def test_long_filters_are_supported():
  # No Euclidean factorization needed: db20 (40 taps) matches PyWavelets.
  shape = (16, 16, 1)
  x = np.random.default_rng(7).standard_normal((1,) + shape)
  t = kamp.get("wavelet", shape, wavelet="db20", levels=2)
  c = np.asarray(t.forward(x.astype(np.float32)))
  ref = _pywt_packed(x, "db20", 2)
  assert np.abs(c - ref).max() / np.abs(ref).max() < 1e-5
  np.testing.assert_allclose(t.inverse(c), x, atol=1e-5)
