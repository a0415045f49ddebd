"""Download-free metrics: classifier FD, spectrum, sliced W, PSNR/SSIM."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.stats
from skimage import metrics as sk_metrics

from kflow_jax.evaluators import cheap
from kflow_jax.evaluators import classifier
from kflow_jax.evaluators import image_quality
from kflow_jax.evaluators import random_features
from kflow_jax.evaluators import reference
from kflow_jax.evaluators import sliced
from kflow_jax.evaluators import spectrum

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Enough for > 95 % held-out accuracy (measured 0.980 at 200 steps; the
# tool's default 1000 steps gives 0.990).
TEST_STEPS = 200


@pytest.fixture(scope="module")
def digits():
  x_train, y_train = reference.load_split("digits", "train")
  x_test, y_test = reference.load_split("digits", "test")
  return x_train, y_train, x_test, y_test


@pytest.fixture(scope="module")
def patches():
  x, _ = reference.load_split("natural_patches", "test", image_size=16,
                              eval_patches=400)
  return x


@pytest.fixture(scope="module")
def clf_path(tmp_path_factory):
  """The tool, run through its command line, trains the test classifier."""
  out = str(tmp_path_factory.mktemp("clf") / "digits.npz")
  # Optimised: 200 real steps gain more from XLA's passes than they cost
  # (11.5 s against 14.2 s of CPU without them, tests/conftest.py).
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0")
  result = subprocess.run(
      [sys.executable, "-m", "kflow_jax.tools.train_classifier",
       "--dataset=digits", f"--out={out}", f"--steps={TEST_STEPS}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "held-out accuracy" in result.stdout
  return out


@pytest.fixture(scope="module")
def clf(clf_path):
  return classifier.load(clf_path, dataset="digits", image_shape=(16, 16, 1))


def _noise(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# --------------------------------------------------------------- classifier


# Fast: the module-scoped classifier is trained once for the fast tests
# anyway; the check itself takes a fraction of a second.
def test_tool_classifier_loads_and_beats_90_percent(clf, digits):
  _, _, x_test, y_test = digits
  assert clf.dataset == "digits" and clf.image_shape == (16, 16, 1)
  assert clf.num_classes == 10 and clf.steps == TEST_STEPS
  assert clf.accuracy > 0.9
  # The stored accuracy is the held-out accuracy of the stored weights.
  assert classifier.class_accuracy(clf, x_test, y_test) == pytest.approx(
      clf.accuracy)
  feats = clf.features(x_test[:5])
  assert feats.shape == (5, clf.feature_dim)


def test_classifier_fd_near_zero_for_real_and_large_for_noise(clf, digits):
  x_train, _, x_test, _ = digits
  everything = np.concatenate([x_train, x_test])
  perm = np.random.default_rng(0).permutation(len(everything))
  half_a, half_b = everything[perm[:898]], everything[perm[898:]]
  real = classifier.frechet_distance(clf, half_a, half_b)
  noise = classifier.frechet_distance(clf, half_a, _noise(half_a.shape))
  assert real >= 0.0
  assert real < 0.05 * noise, (real, noise)
  # Symmetric up to round-off.
  assert classifier.frechet_distance(clf, half_b, half_a) == pytest.approx(
      real, rel=1e-6)


def test_class_accuracy_checks_labels(clf, digits):
  _, _, x_test, y_test = digits
  with pytest.raises(ValueError, match="labels"):
    classifier.class_accuracy(clf, x_test[:4], y_test[:3])
  with pytest.raises(ValueError, match=r"\[0, 10\)"):
    classifier.class_accuracy(clf, x_test[:2], np.array([0, 10]))


def test_classifier_load_errors_name_the_tool(clf_path, tmp_path):
  missing = str(tmp_path / "none.npz")
  with pytest.raises(ValueError,
                     match="python -m kflow_jax.tools.train_classifier"):
    classifier.load(missing, dataset="digits")
  with pytest.raises(ValueError, match="not 'mnist'.*train_classifier"):
    classifier.load(clf_path, dataset="mnist")
  with pytest.raises(ValueError, match="--image_size=32"):
    classifier.load(clf_path, dataset="digits", image_shape=(32, 32, 1))
  np.savez(str(tmp_path / "other.npz"), a=np.zeros(3))
  with pytest.raises(ValueError, match="not a classifier file"):
    classifier.load(str(tmp_path / "other.npz"))


def test_classifier_rejects_wrong_image_shape(clf):
  with pytest.raises(ValueError, match=r"\(16, 16, 1\)"):
    clf.features(np.zeros((2, 8, 8, 1), np.float32))
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    clf.features(np.zeros((2, 16, 16), np.float32))


def test_classifier_save_load_roundtrip(clf, tmp_path, digits):
  path = classifier.save(str(tmp_path / "copy.npz"), clf)
  again = classifier.load(path)
  x = digits[2][:8]
  np.testing.assert_array_equal(again.features(x), clf.features(x))


# ----------------------------------------------------------- random features


def test_random_feature_fd(patches):
  real = random_features.frechet_distance(patches[:200], patches[200:])
  noise = random_features.frechet_distance(patches, _noise(patches.shape))
  assert 0.0 <= real < 0.05 * noise, (real, noise)
  assert random_features.frechet_distance(
      patches[200:], patches[:200]) == pytest.approx(real, rel=1e-6)
  net = random_features.build(3, seed=0)
  np.testing.assert_array_equal(net.features(patches[:4]),
                                random_features.build(3).features(patches[:4]))
  with pytest.raises(ValueError, match="channels=1"):
    net.features(np.zeros((2, 16, 16, 1), np.float32))


# ----------------------------------------------------------------- spectrum


def test_radial_bins_use_kamp_kappa():
  rb = spectrum.radial_bins(16, 16)
  assert rb.kappa[0] == 0.0 and np.all(np.diff(rb.kappa) > 0)
  assert rb.kappa[-1] <= 1.0
  assert rb.index.shape == (16, 9) and rb.kappa.shape == (rb.index.max() + 1,)


def test_white_noise_power_is_flat_at_its_variance():
  # Orthonormal rfft2: white noise of variance v has power v in every bin.
  p = spectrum.power_spectrum(_noise((2000, 16, 16, 1)))
  np.testing.assert_allclose(p, 1.0 / 3.0, rtol=0.1)


def test_spectrum_error(patches):
  cutoffs = (0.0, 0.25, 0.5, 1.0)
  same = spectrum.spectrum_error(patches, patches, cutoffs)
  assert same.mean == 0.0 and same.fine == 0.0
  np.testing.assert_array_equal(same.bands, np.zeros(3))
  assert same.bands.shape == (3,)
  noise = spectrum.spectrum_error(_noise(patches.shape), patches, cutoffs)
  assert noise.fine > 2.0 and noise.mean > 1.0, noise
  halves = spectrum.spectrum_error(patches[:200], patches[200:], cutoffs)
  assert halves.fine < 0.1 * noise.fine
  # A band narrower than one radial bin holds none: NaN, not an error.
  # (16x16: the first bins have kappa 0, 0.107, 0.191, ...)
  narrow = spectrum.spectrum_error(patches, patches, (0.0, 0.1, 0.105, 1.0))
  np.testing.assert_array_equal(np.isnan(narrow.bands), [False, True, False])
  with pytest.raises(ValueError, match="cutoffs"):
    spectrum.spectrum_error(patches, patches, (0.1, 1.0))
  with pytest.raises(ValueError, match="image shape"):
    spectrum.spectrum_error(patches, patches[:, :8], cutoffs)


# ------------------------------------------------------------------- sliced


def test_wasserstein_1d_matches_scipy_and_replication():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 1.0
  np.testing.assert_allclose(
      sliced.wasserstein_1d(x, y, 1),
      [scipy.stats.wasserstein_distance(x[:, i], y[:, i]) for i in range(3)])
  # Unequal sizes: replicating each set to size N*M gives equal-size sets
  # with the same distributions, where W2 is the sorted difference.
  xr, yr = np.repeat(x, 5, 0), np.repeat(y, 7, 0)
  np.testing.assert_allclose(
      sliced.wasserstein_1d(x, y, 2),
      np.sqrt(np.mean((np.sort(xr, 0) - np.sort(yr, 0)) ** 2, 0)))


def test_sliced_wasserstein(patches):
  key = jax.random.key(0)
  assert sliced.sliced_wasserstein(patches, patches, key) == 0.0
  a, b = patches[:150], patches[150:]  # unequal sizes
  ab = sliced.sliced_wasserstein(a, b, key)
  assert ab == pytest.approx(sliced.sliced_wasserstein(b, a, key), rel=1e-12)
  shifted = sliced.sliced_wasserstein(patches + 0.1, patches, key)
  # A constant shift c moves every projection by c * sum(theta), whose
  # root mean square over directions is c.
  assert shifted == pytest.approx(0.1, rel=0.2)
  assert shifted > ab > 0.0
  assert sliced.sliced_wasserstein(a, b, key, p=1) > 0.0
  with pytest.raises(ValueError, match="p must be >= 1"):
    sliced.sliced_wasserstein(a, b, key, p=0.5)


# ------------------------------------------------------------ PSNR and SSIM


def test_psnr_ssim_match_skimage(patches):
  a = patches[:4]
  b = np.clip(a + 0.1 * np.random.default_rng(1).normal(size=a.shape),
              -1, 1).astype(np.float32)
  a01, b01 = (a.astype(np.float64) + 1) / 2, (b.astype(np.float64) + 1) / 2
  want_psnr = [sk_metrics.peak_signal_noise_ratio(x, y, data_range=1.0)
               for x, y in zip(a01, b01)]
  want_ssim = [sk_metrics.structural_similarity(
      x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False) for x, y in zip(a01, b01)]
  np.testing.assert_allclose(image_quality.psnr(a, b), want_psnr, rtol=1e-5)
  np.testing.assert_allclose(image_quality.ssim(a, b), want_ssim, atol=1e-4)
  m = image_quality.paired_metrics(a, b)
  assert m["psnr"] == pytest.approx(np.mean(want_psnr), rel=1e-5)
  assert m["ssim"] == pytest.approx(np.mean(want_ssim), abs=1e-4)
  assert np.all(image_quality.ssim(a, a) > 0.9999)
  with pytest.raises(ValueError, match="pairs"):
    image_quality.psnr(a, b[:3])


def test_ssim_fits_small_images():
  x = reference.load_split("digits", "test", image_size=8)[0][:4]
  assert image_quality.ssim(x, x).shape == (4,)
  with pytest.raises(ValueError, match="filter_size"):
    image_quality.ssim(x, x, filter_size=11)


# -------------------------------------------------------------- cheap dict


def test_cheap_metrics_digits(clf, clf_path, digits):
  x_train, _, x_test, y_test = digits
  cutoffs = (0.0, 0.5, 1.0)
  m = cheap.cheap_metrics(x_test, x_train, dataset="digits", labels=y_test,
                          classifier=clf, cutoffs=cutoffs)
  assert set(m) == {"spectrum_error", "spectrum_error_fine",
                    "spectrum_error_band0", "spectrum_error_band1",
                    "sliced_w2", "random_fd", "classifier_fd",
                    "class_accuracy"}
  assert all(isinstance(v, float) for v in m.values())
  assert m["class_accuracy"] > 0.9
  # A path works like the loaded classifier.
  again = cheap.cheap_metrics(x_test, x_train, dataset="digits",
                              classifier=clf_path)
  assert again["classifier_fd"] == pytest.approx(m["classifier_fd"])
  assert "class_accuracy" not in again
  with pytest.raises(ValueError, match="needs a classifier"):
    cheap.cheap_metrics(x_test, x_train, dataset="digits", labels=y_test)
  with pytest.raises(ValueError, match="'natural_patches'"):
    cheap.cheap_metrics(x_test, x_train, dataset="natural_patches",
                        classifier=clf)


def test_cheap_metrics_patches(patches):
  m = cheap.cheap_metrics(patches[:200], patches[200:],
                          dataset="natural_patches")
  assert set(m) == {"spectrum_error", "spectrum_error_fine", "sliced_w2",
                    "random_fd"}
  noise = cheap.cheap_metrics(_noise(patches.shape), patches,
                              dataset="natural_patches")
  for k in m:
    assert noise[k] > 3 * m[k], (k, m[k], noise[k])
  with pytest.raises(ValueError, match="image shape"):
    cheap.cheap_metrics(patches, patches[..., :1], dataset="natural_patches")
  with pytest.raises(ValueError, match="at least 2"):
    cheap.cheap_metrics(patches[:1], patches, dataset="natural_patches")
