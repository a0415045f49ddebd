"""Tests of the FID Inception, its weight import and the input protocols.

Default tests need no torch. Tests marked `parity` compare with pytorch-fid
itself on seeded random weights (no download: the FID Inception modules are
built like pytorch_fid.inception.fid_inception_v3 does, minus the weight
loading); they skip when torch / pytorch-fid are not installed:

    pip install torch==2.13.0 torchvision==0.28.0 pytorch-fid==0.3.0 \\
      torch-fidelity==0.4.0
    python -m pytest tests/inception_test.py tests/fid_test.py -m parity
"""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax.evaluators import fid
from kflow_jax.evaluators import frechet
from kflow_jax.evaluators import inception
from kflow_jax.evaluators import preprocess
from kflow_jax.evaluators import torch_pickle
from torch_parity import build_random_pytorch_fid
from torch_parity import import_pytorch_fid
from torch_parity import torch_features

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")

# ---------------------------------------------------------------------------
# Architecture and names (no torch).

def test_variables_are_the_472_pytorch_fid_tensors():
  flat = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(inception.variable_shapes()))
  names = {inception.flax_to_torch_name(p): v.shape for p, v in flat.items()}
  assert len(names) == 472
  assert sum(int(np.prod(s)) for s in names.values()) == 23_885_392
  for path in flat:
    assert inception.torch_to_flax_path(
        inception.flax_to_torch_name(path)) == path
  # Shapes from fid_protocols.md, converted OIHW -> HWIO / [out, in] -> T.
  expected = {
      "Conv2d_1a_3x3.conv.weight": (3, 3, 3, 32),
      "Conv2d_4a_3x3.conv.weight": (3, 3, 80, 192),
      "Mixed_5b.branch_pool.conv.weight": (1, 1, 192, 32),
      "Mixed_6b.branch7x7_2.conv.weight": (1, 7, 128, 128),
      "Mixed_6b.branch7x7dbl_5.conv.weight": (1, 7, 128, 192),
      "Mixed_7a.branch3x3_2.conv.weight": (3, 3, 192, 320),
      "Mixed_7b.branch3x3dbl_1.conv.weight": (1, 1, 1280, 448),
      "Mixed_7c.branch_pool.conv.weight": (1, 1, 2048, 192),
      "Mixed_6d.branch1x1.bn.running_var": (192,),
      "fc.weight": (2048, 1008),
      "fc.bias": (1008,),
  }
  for name, shape in expected.items():
    assert names[name] == shape, name
  assert inception.torch_to_flax_path("x.bn.num_batches_tracked") is None


def test_pools_ignore_padding():
  x = jnp.ones((1, 5, 5, 2))
  # count_include_pad=False: the border average of ones stays 1.
  np.testing.assert_allclose(inception._avg_pool(x), x)
  y = jnp.arange(25.0).reshape(1, 5, 5, 1) - 100.0  # all negative
  m = inception._max_pool(y)
  assert m.shape == y.shape and float(m[0, 0, 0, 0]) == -94.0  # not 0 pad


@pytest.fixture(scope="module")
def random_variables():
  variables = inception.random_variables(0)
  rng = np.random.default_rng(1)
  # A non-zero fc bias so logits and logits_unbiased differ.
  variables["params"]["fc"]["bias"] = rng.normal(
      0, 1, 1008).astype(np.float32)
  return variables


@pytest.fixture(scope="module")
def forward(random_variables):
  # One jit per module (about 10 s of XLA compile on 2 CPU cores); the
  # weights are an argument, not 95 MB of constants to fold.
  model = inception.InceptionV3()
  apply = jax.jit(model.apply)
  return lambda x: apply(random_variables, x)


@pytest.mark.slow
def test_forward_outputs(forward, random_variables):
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 299, 299, 3), minval=-1)
  out = jax.device_get(forward(x))
  assert out["pool"].shape == (2, 2048)
  assert out["spatial"].shape == (2, 17 * 17 * 7)
  assert out["logits"].shape == out["logits_unbiased"].shape == (2, 1008)
  assert np.all(np.isfinite(out["pool"]))
  assert np.all(out["spatial"] >= 0)  # post-ReLU, like ADM's mu_s
  bias = np.asarray(random_variables["params"]["fc"]["bias"])
  np.testing.assert_allclose(out["logits"] - bias, out["logits_unbiased"],
                             rtol=1e-5, atol=1e-4)


def test_wrong_input_layout_is_named():
  with pytest.raises(ValueError, match="NHWC"):
    inception.InceptionV3().init(jax.random.PRNGKey(0),
                                 jnp.zeros((1, 3, 299, 299)))


# ---------------------------------------------------------------------------
# Weight import (no torch: files written by torch are in testdata/).

@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_pickle_reads_both_formats(fmt):
  expected = np.load(os.path.join(TESTDATA, "tiny_state_dict_expected.npz"))
  sd = torch_pickle.load_state_dict(
      os.path.join(TESTDATA, f"tiny_state_dict_{fmt}.pth"))
  assert sorted(sd) == sorted(expected.files)
  for k in expected.files:
    assert sd[k].dtype == expected[k].dtype, k
    np.testing.assert_array_equal(sd[k], expected[k])


def test_torch_pickle_refuses_objects_and_other_files(tmp_path):
  with pytest.raises(ValueError, match="refusing to unpickle torch.nn"):
    torch_pickle.load_state_dict(os.path.join(TESTDATA,
                                              "tiny_module_object.pth"))
  with pytest.raises(ValueError, match="not a torch.save archive"):
    torch_pickle.load_state_dict(os.path.join(
        TESTDATA, "tiny_state_dict_expected.npz"))
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"GIF89a not a checkpoint")
  with pytest.raises(ValueError, match="not a torch.save file"):
    torch_pickle.load_state_dict(str(junk))


def test_state_dict_round_trip(random_variables):
  sd = inception.to_pytorch_fid_state_dict(random_variables)
  assert sd["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert sd["fc.weight"].shape == (1008, 2048)
  back = inception.convert_pytorch_fid_state_dict(sd)
  for path, v in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(random_variables)).items():
    np.testing.assert_array_equal(
        flax.traverse_util.flatten_dict(back)[path], v)


def test_mismatched_state_dict_lists_names(random_variables):
  sd = inception.to_pytorch_fid_state_dict(random_variables)
  del sd["Mixed_7c.branch_pool.conv.weight"]
  sd["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  with pytest.raises(ValueError) as e:
    inception.convert_pytorch_fid_state_dict(sd)
  msg = str(e.value)
  assert "missing 1 ['Mixed_7c.branch_pool.conv.weight']" in msg
  assert "unexpected 1 ['AuxLogits.fc.weight']" in msg
  sd = inception.to_pytorch_fid_state_dict(random_variables)
  sd["fc.weight"] = np.zeros((1000, 2048), np.float32)  # torchvision's fc
  with pytest.raises(ValueError, match="expects \\(2048, 1008\\)"):
    inception.convert_pytorch_fid_state_dict(sd)


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
  monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
  with pytest.raises(ValueError) as e:
    inception.load_pytorch_fid_weights()
  msg = str(e.value)
  assert "nope.pth" in msg and inception.WEIGHTS_URL in msg
  assert "pt_inception-2015-12-05-6726825d.pth" in msg
  assert inception.WEIGHTS_ENV in msg
  assert "--config.evals.inception_weights=" in msg


def test_wrong_file_fails_the_hash_check():
  path = os.path.join(TESTDATA, "tiny_state_dict_zip.pth")
  with pytest.raises(ValueError, match="not 6726825d") as e:
    inception.load_pytorch_fid_weights(path)
  # It names the way to use a converted copy of the weights.
  assert "--config.evals.check_weights_hash=False" in str(e.value)
  assert "check_hash=False" in str(e.value)
  # Without the hash check the names are compared and listed.
  with pytest.raises(ValueError, match="missing 467 .*unexpected 2"):
    inception.load_pytorch_fid_weights(path, check_hash=False)


# ---------------------------------------------------------------------------
# Input protocols against a loop-by-loop numpy transcription of the formulas.

def _numpy_bilinear(img, out, half_pixel):
  """One image [H, W, C], written out pixel by pixel (float64)."""
  h, w, _ = img.shape
  res = np.zeros((out, out, img.shape[2]))

  def src(d, n):
    if half_pixel:  # torch align_corners=False
      return max((d + 0.5) * n / out - 0.5, 0.0)
    return d * n / out  # TF1 legacy ResizeBilinear

  for i in range(out):
    y = src(i, h)
    y0 = min(int(np.floor(y)), h - 1)
    y1, fy = min(y0 + 1, h - 1), y - y0
    for j in range(out):
      x = src(j, w)
      x0 = min(int(np.floor(x)), w - 1)
      x1, fx = min(x0 + 1, w - 1), x - x0
      top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
      bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
      res[i, j] = top * (1 - fy) + bot * fy
  return res


@pytest.mark.parametrize("size_in,size_out", [(7, 19), (19, 7), (5, 5)])
@pytest.mark.parametrize("half_pixel", [True, False])
def test_resize_matches_formula(size_in, size_out, half_pixel):
  img = np.random.default_rng(0).random((1, size_in, size_in, 2))
  got = preprocess.resize_bilinear(img, size_out, half_pixel)
  want = _numpy_bilinear(img[0], size_out, half_pixel)
  np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_half_pixel_resize_is_jax_without_antialias():
  # An independent implementation of torch's align_corners=False.
  img = np.random.default_rng(1).random((2, 64, 48, 3)).astype(np.float32)
  for size in (97, 31):
    ours = preprocess.resize_bilinear(img[:, :48], size)
    ref = jax.image.resize(img[:, :48], (2, size, size, 3), "bilinear",
                           antialias=False)
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_tf1_legacy_resize_small_example():
  # 2 -> 4 with src = dst * 0.5: [a, (a+b)/2, b, b] (no half-pixel shift).
  x = np.array([[10.0, 20.0]]).reshape(1, 1, 2, 1)
  got = preprocess._resize_axis(jnp.asarray(x), 2, 4, half_pixel=False)
  np.testing.assert_allclose(np.ravel(got), [10, 15, 20, 20])
  got = preprocess._resize_axis(jnp.asarray(x), 2, 4, half_pixel=True)
  np.testing.assert_allclose(np.ravel(got), [10, 12.5, 17.5, 20])


def test_protocol_scaling():
  img = np.random.default_rng(2).integers(0, 256, (2, 299, 299, 3),
                                          dtype=np.uint8)
  np.testing.assert_allclose(preprocess.preprocess(img, "pytorch_fid"),
                             img / 255.0 * 2 - 1, atol=1e-6)
  np.testing.assert_allclose(preprocess.preprocess(img, "adm"),
                             (img - 128.0) / 128.0, atol=1e-6)
  assert float(preprocess.preprocess(np.full((1, 299, 299, 3), 255,
                                             np.uint8), "adm").max()) == (
                                                 0.9921875)
  # Floats in each protocol's own range give the same result as uint8.
  np.testing.assert_allclose(
      preprocess.preprocess(img / np.float32(255), "pytorch_fid"),
      preprocess.preprocess(img, "pytorch_fid"), atol=1e-6)
  grey = preprocess.preprocess(img[..., :1], "adm")
  assert grey.shape == (2, 299, 299, 3)
  with pytest.raises(ValueError, match="unknown protocol"):
    preprocess.preprocess(img, "clean_fid")
  with pytest.raises(ValueError, match="Pass uint8"):
    preprocess.check_range(img.astype(np.float32), "pytorch_fid")
  preprocess.check_range(img.astype(np.float32), "adm")


# ---------------------------------------------------------------------------
# FID in one call against the chained functions (random weights).

def _sample_set_dir(root, images, chunk):
  """A sample set as --mode=sample writes it (chunk_*.npz, samples.json)."""
  os.makedirs(root)
  for c in range(-(-len(images) // chunk)):
    part = images[c * chunk:(c + 1) * chunk]
    np.savez(os.path.join(root, f"chunk_{c:06d}.npz"), images=part,
             labels=np.zeros(len(part), np.int32),
             indices=np.arange(c * chunk, c * chunk + len(part)))
  with open(os.path.join(root, "samples.json"), "w") as f:
    f.write(f'{{"num_samples": {len(images)}, "chunk_size": {chunk}}}')
  return str(root)


def _eigh_frechet(calls):
  """frechet_distance by eigendecompositions (seconds, where scipy's sqrtm
  of a singular 2048 x 2048 product takes minutes on 2 cores), recording
  its inputs; frechet itself is tested against it in fid_test.py."""
  def fd(mu1, s1, mu2, s2):
    calls.append((mu1, s1, mu2, s2))
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))
  return fd


@pytest.mark.slow
def test_fid_in_one_call_equals_the_chained_path(random_variables, tmp_path,
                                                 monkeypatch):
  calls = []
  monkeypatch.setattr(frechet, "frechet_distance", _eigh_frechet(calls))
  rng = np.random.default_rng(12)
  samples = rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
  ref_images = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
  weights = torch_pickle.save_state_dict(
      str(tmp_path / "w.pth"),
      inception.to_pytorch_fid_state_dict(random_variables))
  # The chained path of fid.py's docstring, and a tools/fid_reference-style
  # file of the reference images' statistics.
  variables = inception.load_pytorch_fid_weights(weights, check_hash=False)
  fn = fid.feature_fn(variables, "pytorch_fid")
  ref_stats = fid.feature_statistics(
      fid.extract_features(fn, ref_images, batch_size=4))
  want = fid.fid(fid.feature_statistics(
      fid.extract_features(fn, samples, batch_size=4)), ref_stats)
  ref = str(tmp_path / "ref.npz")
  fid.save_reference(ref, ref_stats)
  with np.load(ref) as npz:
    arrays = dict(npz)
  np.savez(ref, **arrays, meta_protocol=np.asarray("pytorch_fid"),
           meta_weights_sha256=np.asarray(inception.sha256_prefix(weights,
                                                                  64)))
  assert np.isfinite(want) and want > 0
  got = fid.fid_from_images(samples, ref, weights=weights, check_hash=False,
                            batch_size=4)
  assert got == pytest.approx(want, rel=1e-9)
  # Reference images instead of a file; variables instead of a path.
  assert fid.fid_from_images(samples, ref_images, weights=variables,
                             batch_size=4) == pytest.approx(want, rel=1e-9)
  # A sample folder of --mode=sample, read chunk by chunk.
  folder = _sample_set_dir(tmp_path / "set", samples, chunk=4)
  assert fid.fid_from_sample_set(
      folder, ref, weights=weights, check_hash=False,
      batch_size=4) == pytest.approx(want, rel=1e-9)
  # Every call compared the same two Gaussians.
  assert len(calls) == 4
  for got_call in calls[1:]:
    for a, b in zip(got_call, calls[0]):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
  # Checked like --mode=eval: the hash, the reference's protocol and
  # weights, the set's quantisation.
  with pytest.raises(ValueError, match="check_weights_hash=False"):
    fid.fid_from_images(samples, ref, weights=weights)
  with pytest.raises(ValueError, match="protocol 'pytorch_fid'"):
    fid.fid_from_images(samples, ref, weights=weights, check_hash=False,
                        protocol="adm")
  with pytest.raises(ValueError, match="quantised by 'round'"):
    fid.fid_from_sample_set(folder, ref, weights=variables, protocol="adm")


# ---------------------------------------------------------------------------
# Parity with pytorch-fid (seeded random weights; pytest -m parity).

def _rel_err(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def parity_setup(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("fid") / "random_fid_inception.pth")
  model = build_random_pytorch_fid(path)
  variables = inception.load_pytorch_fid_weights(path, check_hash=False)
  fn = fid.feature_fn(variables, "pytorch_fid")
  return model, variables, fn, path


@pytest.mark.parity
@pytest.mark.parametrize("size", [299, 64, 256])
def test_features_match_pytorch_fid(parity_setup, size):
  model, variables, fn, path = parity_setup
  x = np.random.default_rng(size).random((2, size, size, 3),
                                         dtype=np.float32)
  ref = torch_features(model, x)
  out = jax.device_get(fn(x))
  errs = {k: _rel_err(out[k], ref[k]) for k in ("pool", "spatial")}
  sd = torch_pickle.load_state_dict(path)
  logits = ref["pool"] @ sd["fc.weight"].T + sd["fc.bias"]
  errs["logits"] = _rel_err(out["logits"], logits)
  print(f"size {size}: max |jax - torch| / max |torch| = {errs}")
  for k, e in errs.items():
    assert e < 1e-4, (k, e)


@pytest.mark.parity
def test_legacy_pth_loads_the_same(parity_setup, tmp_path):
  torch, _ = import_pytorch_fid()
  _, variables, _, path = parity_setup
  legacy = str(tmp_path / "legacy.pth")
  torch.save(torch.load(path), legacy, _use_new_zipfile_serialization=False)
  again = inception.load_pytorch_fid_weights(legacy, check_hash=False)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, variables)


@pytest.mark.parity
def test_fid_matches_pytorch_fid(parity_setup):
  """End to end: images -> features -> FID, ours vs pytorch-fid's.

  A full 2048-d FID needs more than 2048 images per set for a non-singular
  covariance (pytorch-fid itself fails on a dozen: "Imaginary component"),
  far too many for a CPU test; the distance is therefore taken over the
  DIMS dimensions that vary most (the same indices for both
  implementations; a random net leaves some features constant), which
  exercises the same features and formula. fid_test.py checks the formula
  at full size.
  """
  fid_score = pytest.importorskip("pytorch_fid.fid_score")
  model, _, fn, _ = parity_setup
  rng = np.random.default_rng(7)
  n, dims = 8, 6
  noise = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
  ramp = np.linspace(0, 255, 64)[None, :, None, None] * rng.random(
      (n, 1, 1, 3))
  smooth = (ramp + rng.normal(0, 20, (n, 64, 1, 3))).clip(0, 255)
  smooth = smooth.astype(np.uint8)
  ours, theirs = [], []
  for imgs in (noise, smooth):
    # Batches of 2 at 64 px: the shape test_features_match compiled.
    feats = [jax.device_get(fn(imgs[i:i + 2])) for i in range(0, n, 2)]
    ours.append({k: np.concatenate([f[k] for f in feats])
                 for k in ("pool", "spatial")})
    theirs.append(torch_features(model, imgs / np.float32(255)))
  for key in ("pool", "spatial"):
    both = np.concatenate([theirs[0][key], theirs[1][key]])
    keep = np.argsort(-both.std(axis=0))[:dims]
    ours = [{**o, key: o[key][:, keep]} for o in ours]
    theirs = [{**t, key: t[key][:, keep]} for t in theirs]
    mu = [np.mean(t[key], axis=0) for t in theirs]
    sig = [np.cov(t[key], rowvar=False) for t in theirs]
    ref = fid_score.calculate_frechet_distance(mu[0], sig[0], mu[1], sig[1])
    same = frechet.frechet_distance(mu[0], sig[0], mu[1], sig[1])
    a, b = frechet.statistics(ours[0][key]), frechet.statistics(ours[1][key])
    mine = frechet.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    print(f"{key}[{dims} dims]: pytorch-fid {ref:.6f}, ours on its features "
          f"{same:.6f}, ours end to end {mine:.6f} (rel "
          f"{abs(mine - ref) / ref:.2e})")
    assert abs(same - ref) <= 1e-6 * ref
    assert abs(mine - ref) <= 1e-3 * ref


@pytest.mark.parity
def test_resizes_match_torch_and_torch_fidelity():
  torch, _ = import_pytorch_fid()
  x = np.random.default_rng(3).random((2, 3, 37, 53)).astype(np.float32)
  nhwc = x.transpose(0, 2, 3, 1)
  for size in (299, 16):
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(size, size), mode="bilinear",
        align_corners=False).numpy().transpose(0, 2, 3, 1)
    got = preprocess.resize_bilinear(nhwc, size, half_pixel=True)
    np.testing.assert_allclose(got, want, atol=2e-6)
  tf1 = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
  for size in (299, 16):
    want = tf1.interpolate_bilinear_2d_like_tensorflow1x(
        torch.from_numpy(x * 255), size=(size, size),
        align_corners=False).numpy().transpose(0, 2, 3, 1)
    got = preprocess.resize_bilinear(nhwc * 255, size, half_pixel=False)
    np.testing.assert_allclose(got, want, atol=2e-4)  # 0..255 scale


@pytest.mark.parity
def test_adm_protocol_matches_torch_fidelity(parity_setup):
  """torch-fidelity's TF-exact Inception (TF1 resize, (x-128)/128, same
  state dict names) stands in for the ADM evaluator's TF graph."""
  torch, _ = import_pytorch_fid()
  tfid = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
  _, variables, _, path = parity_setup
  model = tfid.FeatureExtractorInceptionV3(
      "inception-v3-compat", ["2048", "logits_unbiased"],
      feature_extractor_weights_path=path)
  x = np.random.default_rng(11).integers(0, 256, (2, 64, 64, 3),
                                         dtype=np.uint8)
  with torch.no_grad():
    pool, logits = model(torch.from_numpy(x).permute(0, 3, 1, 2))
  out = jax.device_get(fid.feature_fn(variables, "adm")(x))
  errs = {"pool": _rel_err(out["pool"], pool.numpy()),
          "logits_unbiased": _rel_err(out["logits_unbiased"],
                                      logits.numpy())}
  print(f"adm protocol, 64 px: max |jax - torch| / max |torch| = {errs}")
  for k, e in errs.items():
    assert e < 1e-4, (k, e)
