"""Tests of kflow_jax.evaluators.fid (and frechet): metrics from features.

No Inception forward here: features are synthetic, so every test is fast
and needs no torch. The one `parity` test compares the Frechet distance
with pytorch-fid's own function (skips without pytorch-fid).
"""
import os

import numpy as np
import pytest
from scipy import linalg

from kflow_jax.evaluators import fid
from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import preprocess
from torch_parity import import_pytorch_fid


def _random_cov(rng, d, n=None):
  a = rng.normal(size=(d, n or 2 * d))
  return a @ a.T / a.shape[1]


# ---------------------------------------------------------------------------
# Frechet distance.

def _reference_fd(mu1, s1, mu2, s2):
  # An independent route: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the
  # latter symmetric PSD, so an eigendecomposition gives it exactly.
  w, v = linalg.eigh(s1)
  r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = linalg.eigvalsh(r1 @ s2 @ r1)
  return (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def test_frechet_matches_scipy_reference_on_gaussians():
  rng = np.random.default_rng(0)
  for d in (1, 8, 64):
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    got = frechet.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, _reference_fd(mu1, s1, mu2, s2),
                               rtol=1e-8)
  # Diagonal covariances: sum (mu1-mu2)^2 + (sqrt(a) - sqrt(b))^2.
  a, b = rng.random(16) + 0.1, rng.random(16) + 0.1
  got = frechet.frechet_distance(np.zeros(16), np.diag(a), np.ones(16),
                                 np.diag(b))
  np.testing.assert_allclose(got, 16 + np.sum((np.sqrt(a) - np.sqrt(b))**2),
                             rtol=1e-10)


def test_frechet_identical_is_zero_and_symmetric():
  rng = np.random.default_rng(1)
  f1, f2 = rng.normal(size=(500, 32)), rng.normal(1, 2, size=(400, 32))
  assert abs(frechet.frechet_from_features(f1, f1)) < 1e-8
  np.testing.assert_allclose(frechet.frechet_from_features(f1, f2),
                             frechet.frechet_from_features(f2, f1),
                             rtol=1e-9)
  with pytest.raises(ValueError, match="statistics do not match"):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_and_sfid_use_their_own_statistics():
  rng = np.random.default_rng(2)
  a = {"pool": rng.normal(size=(300, 8)), "spatial": rng.normal(size=(300, 5))}
  b = {"pool": a["pool"] + 1.0, "spatial": a["spatial"]}
  sa, sb = fid.feature_statistics(a), fid.feature_statistics(b)
  np.testing.assert_allclose(fid.fid(sa, sb), 8.0, rtol=1e-6)  # mean shift
  assert abs(fid.sfid(sa, sb)) < 1e-8


# ---------------------------------------------------------------------------
# Inception Score.

def _adm_inception_score(preds, split_size=5000):
  """evaluator.py L179-192, transcribed (softmax probabilities in)."""
  scores = []
  for i in range(0, len(preds), split_size):
    part = preds[i:i + split_size]
    kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    kl = np.mean(np.sum(kl, 1))
    scores.append(np.exp(kl))
  return float(np.mean(scores))


def test_inception_score():
  assert fid.inception_score(np.zeros((100, 1008))) == pytest.approx(1.0)
  # Confident and balanced over 10 classes: IS = 10.
  confident = np.full((1000, 10), -50.0)
  confident[np.arange(1000), np.arange(1000) % 10] = 50.0
  assert fid.inception_score(confident) == pytest.approx(10.0, rel=1e-9)
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, size=(12000, 50))
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  assert fid.inception_score(logits) == pytest.approx(
      _adm_inception_score(p), rel=1e-9)
  assert len(fid.inception_score_splits(logits)) == 3  # 5000, 5000, 2000
  assert len(fid.inception_score_splits(logits, num_splits=10)) == 10
  # 50k in ADM's 5000-splits and in 10 splits are the same thing.
  big = rng.normal(size=(50000, 4))
  np.testing.assert_allclose(fid.inception_score_splits(big),
                             fid.inception_score_splits(big, num_splits=10))
  with pytest.raises(ValueError, match="logits must be"):
    fid.inception_score(np.zeros(10))


# ---------------------------------------------------------------------------
# Precision / recall.

def _adm_precision_recall(ref, smp, k=3):
  """ManifoldEstimator semantics in float64 numpy, brute force."""
  def sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
  r_ref = np.sort(sq(ref, ref), axis=1)[:, k]
  r_smp = np.sort(sq(smp, smp), axis=1)[:, k]
  precision = np.mean(np.any(sq(smp, ref) <= r_ref[None, :], axis=1))
  recall = np.mean(np.any(sq(ref, smp) <= r_smp[None, :], axis=1))
  return precision, recall


def test_precision_recall_identical_and_disjoint():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(200, 16))
  assert fid.precision_recall(x, x) == (1.0, 1.0)
  assert fid.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_recall_matches_brute_force():
  rng = np.random.default_rng(5)
  ref = rng.normal(size=(300, 12))
  smp = rng.normal(0.3, 1.3, size=(250, 12))
  want = _adm_precision_recall(ref, smp)
  got = fid.precision_recall(ref, smp)
  # float32 distances may flip a point sitting on a ball's surface.
  np.testing.assert_allclose(got, want, atol=1 / 250)
  assert 0.2 < got[0] < 1 and 0.2 < got[1] < 1
  # Row blocks (with a padded last block) change nothing.
  assert fid.precision_recall(ref, smp, batch_size=64) == got
  np.testing.assert_allclose(fid.knn_radii(ref, batch_size=7),
                             np.sort(((ref[:, None] - ref[None]) ** 2).sum(-1),
                                     axis=1)[:, 3], rtol=1e-4)


# ---------------------------------------------------------------------------
# Reference statistics and ADM .npz files.

def _stats(rng, d=2048, ds=2023):
  # Cheap stand-ins of the right shapes (not PSD; only I/O is tested).
  return fid.FeatureStats(rng.normal(size=d), np.eye(d),
                          rng.normal(size=ds), np.eye(ds))


def test_reference_round_trip_and_adm_layout(tmp_path):
  rng = np.random.default_rng(6)
  stats = _stats(rng)
  images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  path = str(tmp_path / "sub" / "ref.npz")
  fid.save_reference(path, stats, images)
  with np.load(path) as npz:  # ADM's key names
    assert sorted(npz.files) == ["arr_0", "mu", "mu_s", "sigma", "sigma_s"]
  ref = fid.load_reference(path)
  assert ref.images is None
  for a, b in zip(ref.stats, stats):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(fid.load_reference(path, True).images, images)
  np.testing.assert_array_equal(fid.load_sample_batch(path), images)
  stats_only = str(tmp_path / "stats.npz")
  fid.save_reference(stats_only, stats)
  with pytest.raises(ValueError, match="no reference images"):
    fid.load_reference(stats_only, load_images=True)


def test_adm_reference_without_protocol_is_refused_under_pytorch_fid(
    tmp_path):
  # ADM's VIRTUAL_*.npz carry no meta_* keys: statistics of ADM's TF
  # pipeline, so meaningful under protocol "adm" only.
  adm = str(tmp_path / "VIRTUAL_imagenet64_labeled.npz")
  fid.save_reference(adm, _stats(np.random.default_rng(10)))
  with pytest.raises(ValueError, match="records no protocol") as e:
    fid.check_reference(adm, "pytorch_fid", "abc")
  msg = str(e.value)
  assert "--config.evals.protocol=adm" in msg
  assert "python -m kflow_jax.tools.fid_reference" in msg
  assert fid.check_reference(adm, "adm", "abc") == {}
  # A file of tools/fid_reference names its protocol and passes under it.
  ours = str(tmp_path / "ours.npz")
  np.savez(ours, **{k: np.asarray(v) for k, v in
                    _stats(np.random.default_rng(11))._asdict().items()},
           meta_protocol=np.asarray("pytorch_fid"),
           meta_weights_sha256=np.asarray("abc"))
  assert fid.check_reference(ours, "pytorch_fid", "abc")["protocol"] == (
      "pytorch_fid")


def test_adm_truncates_to_uint8_and_pytorch_fid_rounds():
  # Values whose rounding and truncation differ (and the clipped ends).
  x = np.asarray([-1.2, -1.0, -0.999, -0.5, 0.0, 0.3, 0.999, 1.0, 1.5],
                 np.float32).reshape(1, 3, 3, 1)
  # ADM's image_sample.py: ((sample + 1) * 127.5).clamp(0, 255).to(uint8).
  adm = np.clip((x + 1) * np.float32(127.5), 0, 255).astype(np.uint8)
  rounded = np.clip(np.floor((x + 1) * np.float32(127.5) + 0.5), 0,
                    255).astype(np.uint8)
  assert np.any(adm != rounded)  # the values do tell the two apart
  np.testing.assert_array_equal(fid.quantize(x, "adm"), adm)
  np.testing.assert_array_equal(fid.quantize(x, "pytorch_fid"), rounded)
  np.testing.assert_array_equal(fid.quantize(adm, "adm"), adm)  # uint8 kept
  # Floats in adm's [0, 255] range meet the network as the uint8 ADM's
  # evaluator would read: truncated, not interpolated between levels.
  f = ((x + 1) * np.float32(127.5)).clip(0, 255)
  np.testing.assert_array_equal(preprocess.preprocess(f, "adm", size=3),
                                preprocess.preprocess(adm, "adm", size=3))
  assert not np.array_equal(preprocess.preprocess(rounded, "adm", size=3),
                            preprocess.preprocess(adm, "adm", size=3))


def test_wrong_files_are_named(tmp_path):
  rng = np.random.default_rng(7)
  sample = str(tmp_path / "samples.npz")
  np.savez(sample, rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
           np.arange(2))
  with pytest.raises(ValueError, match="it is a sample batch"):
    fid.load_reference(sample)
  other = str(tmp_path / "other.npz")
  np.savez(other, weights=np.zeros(3))
  with pytest.raises(ValueError, match="not a reference batch"):
    fid.load_reference(other)
  with pytest.raises(ValueError, match="no arr_0"):
    fid.load_sample_batch(other)
  pb = tmp_path / "classify_image_graph_def.pb"
  pb.write_bytes(b"\x0a\x0b not a zip")
  with pytest.raises(ValueError, match="not an .npz file"):
    fid.load_reference(str(pb))
  with pytest.raises(ValueError, match="no reference batch"):
    fid.load_reference(str(tmp_path / "missing.npz"))
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, mu=np.zeros(64), sigma=np.eye(64), mu_s=np.zeros(5),
           sigma_s=np.eye(5))
  with pytest.raises(ValueError, match="not the 2048 of Inception pool3"):
    fid.load_reference(bad)
  floats = str(tmp_path / "floats.npz")
  np.savez(floats, np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="not uint8"):
    fid.load_sample_batch(floats)


# ---------------------------------------------------------------------------
# Feature extraction loop (with a stand-in for the network).

def _fake_fn(calls):
  def fn(batch):
    calls.append(batch.shape)
    flat = batch.reshape(len(batch), -1).astype(np.float32)
    return {"pool": flat[:, :4], "spatial": flat[:, 4:6]}
  return fn


def test_extract_features_uses_every_image_with_one_shape():
  images = np.arange(7 * 2 * 2 * 3, dtype=np.uint8).reshape(7, 2, 2, 3)
  calls = []
  out = fid.extract_features(_fake_fn(calls), images, batch_size=3)
  assert calls == [(3, 2, 2, 3)] * 3
  np.testing.assert_array_equal(out["pool"], images.reshape(7, -1)[:, :4])
  calls = []
  chunks = [images[:2], images[2:3], images[3:7]]  # uneven iterable
  again = fid.extract_features(_fake_fn(calls), iter(chunks), batch_size=3)
  assert calls == [(3, 2, 2, 3)] * 3
  np.testing.assert_array_equal(again["spatial"], out["spatial"])
  with pytest.raises(ValueError, match="Pass uint8"):
    fid.extract_features(_fake_fn([]), images.astype(np.float32), 3,
                         protocol="pytorch_fid")
  with pytest.raises(ValueError, match="no images"):
    fid.extract_features(_fake_fn([]), iter([]), 3)


def test_one_call_fid_is_the_chained_path(tmp_path, monkeypatch):
  """fid_from_images / fid_from_sample_set against feature_fn ->
  extract_features -> feature_statistics -> fid, with a stand-in network
  (the real one: inception_test.py, -m slow)."""
  def fake_features(variables, images, protocol):
    del variables
    x = preprocess.preprocess(images, protocol, size=4)
    return {"pool": x.reshape(len(x), -1)[:, :6],
            "spatial": x.reshape(len(x), -1)[:, 6:9]}
  monkeypatch.setattr(fid, "_features", fake_features)
  rng = np.random.default_rng(13)
  samples = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
  ref_images = rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
  fn = fid.feature_fn({}, "pytorch_fid")
  ref_stats = fid.feature_statistics(fid.extract_features(fn, ref_images, 4))
  want = fid.fid(fid.feature_statistics(fid.extract_features(fn, samples, 4)),
                 ref_stats)
  assert want > 0
  one = lambda *a, **k: fid.fid_from_images(*a, weights={}, batch_size=4, **k)
  assert one(samples, ref_images) == pytest.approx(want, rel=1e-12)
  assert one(samples, ref_stats) == pytest.approx(want, rel=1e-12)
  assert one(iter([samples[:3], samples[3:]]), ref_images) == (
      pytest.approx(want, rel=1e-12))
  # [-1, 1] floats are quantised as the protocol's pipeline does.
  floats = samples / np.float32(127.5) - 1
  assert one(floats, ref_images) == pytest.approx(want, rel=1e-12)
  # A sample set of --mode=sample (chunk_*.npz + samples.json).
  folder = tmp_path / "set"
  folder.mkdir()
  for c, lo in enumerate(range(0, 7, 3)):
    np.savez(folder / f"chunk_{c:06d}.npz", images=samples[lo:lo + 3],
             labels=np.zeros(len(samples[lo:lo + 3]), np.int32),
             indices=np.arange(lo, min(lo + 3, 7)))
  (folder / "samples.json").write_text('{"num_samples": 7, "chunk_size": 3}')
  assert fid.fid_from_sample_set(str(folder), ref_images, weights={},
                                 batch_size=4) == pytest.approx(want,
                                                                rel=1e-12)
  assert fid.fid_from_sample_set(
      str(folder), ref_images, weights={}, batch_size=4,
      num_samples=5) != pytest.approx(want, rel=1e-6)
  with pytest.raises(ValueError, match="quantised by 'round'"):
    fid.fid_from_sample_set(str(folder), ref_images, weights={},
                            protocol="adm")


def test_evaluate():
  rng = np.random.default_rng(8)
  feats = {"pool": rng.normal(size=(100, 6)),
           "spatial": rng.normal(size=(100, 3)),
           "logits_unbiased": np.zeros((100, 10))}
  stats = fid.feature_statistics(feats)
  out = fid.evaluate(feats, stats, ref_pool=feats["pool"])
  assert abs(out["fid"]) < 1e-8 and abs(out["sfid"]) < 1e-8
  assert out["inception_score"] == pytest.approx(1.0)
  assert out["precision"] == out["recall"] == 1.0
  assert "precision" not in fid.evaluate(feats, stats)


@pytest.mark.parity
def test_frechet_matches_pytorch_fid_at_full_size():
  import_pytorch_fid()  # pytorch_fid imports torchvision
  fid_score = pytest.importorskip("pytorch_fid.fid_score")
  rng = np.random.default_rng(9)
  d = 2048 if os.environ.get("KFLOW_FULL_PARITY") else 256
  f1 = rng.normal(size=(2 * d, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
  f2 = rng.normal(0.1, 1.0, size=(2 * d, d)) * 1.1
  a, b = frechet.statistics(f1), frechet.statistics(f2)
  want = fid_score.calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  got = frechet.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  print(f"d={d}: pytorch-fid {want:.9f}, ours {got:.9f}")
  assert got == pytest.approx(want, rel=1e-9)
