"""Condition slots (kflow_jax/flow/slots.py): a label per group of bands.

The checks compare against quantities computed here from the transform and
the model directly, so each fails if an option is ignored or misapplied.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kflow_jax import generate
from kflow_jax import kamp
from kflow_jax import models
from kflow_jax.config_lib import sections
from kflow_jax.flow import guidance
from kflow_jax.flow import paths
from kflow_jax.flow import sampling
from kflow_jax.flow import label_baselines
from kflow_jax.flow import slots as slots_lib

import perturb

SHAPE = (8, 8, 1)
C = 10


def _cond(**kw):
  d = dict(slot_starts=(0, 1), visibility="causal", slot_dropout=0.0,
           band_mix=0.0, mix_fine_classes=None)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def _path(num_scales=2, overlap=0.0):
  return paths.make_path(kamp.get("fourier", shape=SHAPE),
                         num_scales=num_scales, overlap=overlap)


def _slots(path, label_dropout=0.1, **kw):
  return slots_lib.parse(_cond(**kw), num_bands=path.num_bands,
                         num_classes=C, label_dropout=label_dropout,
                         transform=path.transform)


def test_no_slots_is_none_and_bad_configs_name_the_fix():
  path = _path()
  for starts in (None, (), (0,)):
    assert slots_lib.parse(_cond(slot_starts=starts), num_bands=2,
                           num_classes=C, label_dropout=0.1) is None
  with pytest.raises(ValueError, match="slot_starts"):
    slots_lib.parse(_cond(slot_starts=None, band_mix=0.5), num_bands=2,
                    num_classes=C, label_dropout=0.1)
  with pytest.raises(ValueError, match="config.conditional=True"):
    slots_lib.parse(_cond(), num_bands=2, num_classes=0, label_dropout=0.1)
  for starts in ((1, 2), (0, 0), (0, 2)):
    with pytest.raises(ValueError, match="start at 0 and increase"):
      _slots(path, slot_starts=starts)
  with pytest.raises(ValueError, match="visibility"):
    _slots(path, visibility="future")
  with pytest.raises(ValueError, match="sum\n?.*to at most 1|at most 1"):
    _slots(path, label_dropout=0.5, slot_dropout=0.3)
  bior = paths.make_path(kamp.get("wavelet", shape=SHAPE, wavelet="bior2.2",
                                  levels=1), num_scales=2)
  with pytest.raises(ValueError, match="orthonormal"):
    _slots(bior, band_mix=0.5)


def test_visibility_tables():
  path = _path(num_scales=3)
  table = lambda v, s=(0, 1): _slots(path, visibility=v,
                                     slot_starts=s).table()
  # Slot 0 owns band 0, slot 1 bands 1 and 2.
  np.testing.assert_array_equal(
      table("causal"), [[1, 0], [1, 1], [1, 1]])
  np.testing.assert_array_equal(
      table("active"), [[1, 0], [0, 1], [0, 1]])
  np.testing.assert_array_equal(table("all"), np.ones((3, 2)))
  np.testing.assert_array_equal(
      table("causal", (0, 1, 2)), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
  s = _slots(path)
  t = jnp.array([0.1, 0.5, 0.95])
  tau = np.asarray(path.tau)
  assert tau[1] < 0.5 < tau[2] < 0.95 or tau[1] < 0.5  # bands of t differ
  y = jnp.array([[3, 7], [3, 7], [3, -1]])
  got = slots_lib.visible_labels(s, path, y, t)
  band = np.asarray(paths.active_band(path, t))
  want = np.where(s.table()[band], np.where(np.asarray(y) < 0, C, y), C)
  np.testing.assert_array_equal(got, want)
  assert got[0, 1] == C  # band 0 never reads the fine slot


def test_drop_events_are_disjoint_with_the_configured_rates():
  path = _path()
  s = _slots(path, label_dropout=0.1, slot_dropout=0.15)
  n = 40000
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  y = slots_lib.drop_events(s, keys, jnp.full((n,), 4, jnp.int32))
  null = np.asarray(y) == C
  both = np.mean(null.all(1))
  only0 = np.mean(null[:, 0] & ~null[:, 1])
  only1 = np.mean(~null[:, 0] & null[:, 1])
  tol = 4 * np.sqrt(0.15 * 0.85 / n)
  assert abs(both - 0.1) < tol and abs(only0 - 0.15) < tol
  assert abs(only1 - 0.15) < tol
  assert np.all(np.asarray(y)[~null] == 4)


def test_band_mix_labels_match_the_mixed_coefficients():
  path = _path(num_scales=3)
  s = _slots(path, slot_starts=(0, 1, 2), band_mix=1.0)
  b = 64
  x = jax.random.normal(jax.random.PRNGKey(1), (b,) + SHAPE)
  y = jnp.arange(b, dtype=jnp.int32) % C
  keys = jax.random.split(jax.random.PRNGKey(2), b)
  mix = jax.jit(lambda share, x, y, k: slots_lib.band_mix(
      s._replace(band_mix=share), path, x, y, k), static_argnums=0)
  xm, ym = mix(1.0, x, y, keys)
  forward = jax.jit(path.transform.forward)
  c, cm, cn = forward(x), forward(xm), forward(jnp.roll(x, -1, 0))
  ym = np.asarray(ym)
  cuts = set()
  for i in range(b):
    # Slots 0..cut-1 keep y_i, the others take y_{i+1}; their bands too.
    cut = int(np.argmax(ym[i] != ym[i, 0])) or 3
    assert cut in (1, 2), ym[i]
    cuts.add(cut)
    np.testing.assert_array_equal(ym[i, :cut], y[i])
    np.testing.assert_array_equal(ym[i, cut:], y[(i + 1) % b])
    mine = path.band < s.starts[cut]
    np.testing.assert_allclose(np.asarray(cm[i])[mine],
                               np.asarray(c[i])[mine], atol=1e-5)
    np.testing.assert_allclose(np.asarray(cm[i])[~mine],
                               np.asarray(cn[i])[~mine], atol=1e-5)
  assert cuts == {1, 2}
  # band_mix = 0: the batch bit for bit, labels broadcast.
  x0, y0 = slots_lib.band_mix(s._replace(band_mix=0.0), path, x, y, keys)
  assert x0 is x
  np.testing.assert_array_equal(y0, np.stack([y] * 3, 1))
  # A share: unmixed examples are returned bit for bit.
  xh, yh = mix(0.5, x, y, keys)
  kept = np.all(np.asarray(yh) == np.asarray(y)[:, None], axis=1)
  assert 0 < kept.sum() < b
  np.testing.assert_array_equal(np.asarray(xh)[kept], np.asarray(x)[kept])


def test_band_mix_with_fine_classes_pairs_the_two_groups():
  """mix_fine_classes (plan E3): a hybrid's coarse slot is of a class
  outside the set, its fine slot's bands and label come from the next
  example of a class in it."""
  path = _path()
  fine = (7, 8, 9)
  s = _slots(path, band_mix=1.0, mix_fine_classes=fine)
  b = 48
  x = jax.random.normal(jax.random.PRNGKey(1), (b,) + SHAPE)
  y = jnp.asarray(np.random.default_rng(0).integers(0, C, b), jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(2), b)
  mix = jax.jit(lambda x, y, k: slots_lib.band_mix(s, path, x, y, k))
  xm, ym = mix(x, y, keys)
  ym, yn = np.asarray(ym), np.asarray(y)
  forward = jax.jit(path.transform.forward)
  c, cm = np.asarray(forward(x)), np.asarray(forward(xm))
  low = path.band < 1
  for i in range(b):
    if yn[i] in fine:   # fine-class examples stay real
      np.testing.assert_array_equal(np.asarray(xm[i]), np.asarray(x[i]))
      assert tuple(ym[i]) == (yn[i], yn[i])
      continue
    j = next((i + d) % b for d in range(1, b) if yn[(i + d) % b] in fine)
    assert tuple(ym[i]) == (yn[i], yn[j]), (i, j)
    np.testing.assert_allclose(cm[i][low], c[i][low], atol=1e-5)
    np.testing.assert_allclose(cm[i][~low], c[j][~low], atol=1e-5)
  # A batch without a fine class is returned as it is.
  y0 = jnp.zeros((b,), jnp.int32)
  x0, yy = mix(x, y0, keys)
  np.testing.assert_array_equal(np.asarray(x0), np.asarray(x))
  assert not np.asarray(yy).any()
  for bad in (dict(band_mix=0.0, mix_fine_classes=(1,)),
              dict(band_mix=0.5, mix_fine_classes=(C,)),
              dict(band_mix=0.5, mix_fine_classes=tuple(range(C)))):
    with pytest.raises(ValueError, match="mix_fine_classes"):
      _slots(path, **bad)


def _model(num_slots=2):
  m = models.get("mlp", hidden=32, depth=2, num_classes=C,
                 num_slots=num_slots)
  x = jnp.zeros((1,) + SHAPE)
  y = jnp.zeros((1, num_slots) if num_slots > 1 else (1,), jnp.int32)
  params = jax.jit(m.init)(jax.random.PRNGKey(0), x, jnp.zeros((1,)),
                           y)["params"]
  # A perturbation so label terms differ well above round-off.
  params = perturb.perturbed(params, 5, 0.3)
  return lambda x, t, y: m.apply({"params": params}, x, t, y)


def nn_unbox(tree):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.meta.unbox(tree)


def test_label_table_of_one_slot_is_unchanged_and_slots_need_their_shape():
  one = models.get("mlp", hidden=16, depth=1, num_classes=C)
  x, t = jnp.zeros((2,) + SHAPE), jnp.zeros((2,))
  p1 = one.init(jax.random.PRNGKey(0), x, t, jnp.zeros((2,), jnp.int32))
  p1b = models.get("mlp", hidden=16, depth=1, num_classes=C,
                   num_slots=1).init(jax.random.PRNGKey(0), x, t,
                                     jnp.zeros((2,), jnp.int32))
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p1b)):
    np.testing.assert_array_equal(a, b)
  two = models.get("mlp", hidden=16, depth=1, num_classes=C, num_slots=2)
  p2 = two.init(jax.random.PRNGKey(0), x, t, jnp.zeros((2, 2), jnp.int32))
  table = nn_unbox(p2)["params"]["y_embedder"]["embedding"]
  assert table.shape == (2 * (C + 1), 16)
  with pytest.raises(ValueError, match=r"\[2, 2\]"):
    two.apply(p2, x, t, jnp.zeros((2,), jnp.int32))
  # Each slot reads its own rows: changing slot 1's label changes v.
  v = lambda y: two.apply(p2, x, t + 0.5, jnp.asarray(y, jnp.int32))
  assert not np.allclose(v([[1, 2], [1, 2]]), v([[1, 3], [1, 3]]))


# Active slots fast, causal ones in -m slow.
@pytest.mark.parametrize("visibility", [
    pytest.param("causal", marks=pytest.mark.slow), "active"])
def test_coarse_bands_do_not_depend_on_fine_labels_bit_for_bit(visibility):
  """Causal (or active) slots, no overlap, band projection: band 0 of a
  sample is the same for any fine-slot label, to the bit (same noise)."""
  path = _path()
  s = _slots(path, visibility=visibility)
  net = slots_lib.network(s, path, _model())
  x0 = jax.random.normal(jax.random.PRNGKey(7), (4,) + SHAPE)
  w = slots_lib.guidance_matrix(s, guidance=2.0)

  def sampler(slots, apply):
    """The labels as an argument: one compile serves both fine labels."""
    return jax.jit(lambda y: sampling.sample(
        slots_lib.guided_velocity(apply, path, slots, y, w), path, x0,
        solver="heun", num_steps=8, project=True,
        return_coefficients=True))

  def labels(fine):
    return jnp.array([[3, fine]] * 4, jnp.int32)

  coarse = path.band == 0
  run = sampler(s, net)
  a, b = (np.asarray(run(labels(f))) for f in (5, 8))
  np.testing.assert_array_equal(a[:, coarse], b[:, coarse])
  assert np.max(np.abs(a[:, ~coarse] - b[:, ~coarse])) > 1e-3
  # Negative control: with visibility "all" band 0 reads the fine label.
  s_all = s._replace(visibility="all")
  run = sampler(s_all, slots_lib.network(s_all, path, _model()))
  a, b = (np.asarray(run(labels(f))) for f in (5, 8))
  assert np.max(np.abs(a[:, coarse] - b[:, coarse])) > 1e-4


def test_active_guidance_with_one_weight_is_cfg_velocity_bit_for_bit():
  path = _path()
  s = _slots(path, visibility="all")
  net = slots_lib.network(s, path, _model())
  x = jax.random.normal(jax.random.PRNGKey(8), (6,) + SHAPE)
  t = jnp.linspace(0.05, 0.95, 6)
  y = jnp.array([1, 2, 3, 4, 5, 6], jnp.int32)
  for g in (1.0, 2.5):
    # Each side jitted on its own, as a sampler runs it.
    mine = jax.jit(slots_lib.guided_velocity(
        net, path, s, y, slots_lib.guidance_matrix(s, guidance=g)))(x, t)
    ref = jax.jit(guidance.cfg_velocity(net, path, y, num_classes=C,
                                        guidance=g))(x, t)
    np.testing.assert_array_equal(mine, ref)


def test_nested_and_composable_guidance_match_their_formulas():
  path = _path()
  s = _slots(path, visibility="all")
  net = slots_lib.network(s, path, _model())
  x = jax.random.normal(jax.random.PRNGKey(9), (4,) + SHAPE)
  t = jnp.array([0.1, 0.3, 0.7, 0.9])
  y = jnp.array([[1, 7]] * 4, jnp.int32)
  null = jnp.full_like(y, C)
  w = np.array([[1.5, 0.5], [2.0, 3.0]], np.float32)
  band = np.asarray(paths.active_band(path, t))
  wt = jnp.asarray(w[band])[..., None, None, None]
  v = jax.jit(lambda yy: net(x, t, yy))
  y0 = y.at[:, 1].set(C)
  y1 = y.at[:, 0].set(C)
  nested = v(null) + wt[:, 0] * (v(y0) - v(null)) + wt[:, 1] * (v(y) - v(y0))
  comp = v(null) + wt[:, 0] * (v(y0) - v(null)) + wt[:, 1] * (v(y1) - v(null))
  # The sampler evaluates every label row in one batch, the formula one
  # row per call: float32 products of other batch sizes round apart, and
  # the weights (up to 3) scale that: 1e-4, against label terms of order 1.
  for mode, want in (("nested", nested), ("composable", comp)):
    got = jax.jit(slots_lib.guided_velocity(net, path, s, y, w, mode))(x, t)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # Active: one weight per band, that of the slot that owns it.
  act = jax.jit(slots_lib.guided_velocity(net, path, s, y, w, "active"))(
      x, t)
  wa = jnp.asarray(w[band, s.owner()[band]])[:, None, None, None]
  np.testing.assert_allclose(act, v(null) + wa * (v(y) - v(null)),
                             rtol=1e-5, atol=1e-4)
  # Class drop: from t_drop on, every slot null and no guidance.
  drop = jax.jit(slots_lib.guided_velocity(net, path, s, y, w, "nested",
                                           t_drop=0.5))(x, t)
  np.testing.assert_allclose(drop[2:], v(null)[2:], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(drop[:2], nested[:2], rtol=1e-5, atol=1e-4)


def test_sample_spec_slot_keys_are_checked():
  scfg = sections.sample_defaults()
  spec = generate.parse_spec(scfg, C, 2)
  assert spec.slot_labels == () and spec.guidance_mode == "active"
  scfg.slot_labels = ((3, 8),)
  with pytest.raises(ValueError, match="condition slots"):
    generate.parse_spec(scfg, C, 2)
  spec = generate.parse_spec(scfg, C, 2, num_slots=2)
  assert spec.slot_labels == ((3, 8),)
  assert "_slots" in generate.sample_tag(spec, 10)
  scfg.slot_labels = ((3, 8, 1),)
  with pytest.raises(ValueError, match="2 labels"):
    generate.parse_spec(scfg, C, 2, num_slots=2)
  scfg.slot_labels = ((3, 10),)
  with pytest.raises(ValueError, match="0..9 or -1"):
    generate.parse_spec(scfg, C, 2, num_slots=2)
  scfg.slot_labels = ()
  scfg.guidance_matrix = ((1.0, 1.0),)
  with pytest.raises(ValueError, match="2 rows"):
    generate.parse_spec(scfg, C, 2, num_slots=2)
  scfg.guidance_matrix = ((1.0, 1.0), (1.0, 3.0))
  scfg.guidance_bands = (1,)
  with pytest.raises(ValueError, match="guidance_bands empty"):
    generate.parse_spec(scfg, C, 2, num_slots=2)
  scfg.guidance_bands = ()
  scfg.guidance_mode = "sum"
  with pytest.raises(ValueError, match="guidance_mode"):
    generate.parse_spec(scfg, C, 2, num_slots=2)


def test_sample_labels_of_rows():
  y = slots_lib.sample_labels(2, ((3, 8), (3, -1)), C, jnp.arange(5))
  np.testing.assert_array_equal(y, [[3, 8], [3, -1]] * 2 + [[3, 8]])
  y = slots_lib.sample_labels(2, (), C, jnp.arange(12))
  np.testing.assert_array_equal(y[:, 0], np.arange(12) % C)
  np.testing.assert_array_equal(y[:, 0], y[:, 1])


def test_one_label_baselines_switch_and_factorized():
  """The zero-shot baselines of a run trained with one label: the label
  switched at a time, and the Factorized-Diffusion sum over bands."""
  path = _path(num_scales=1)   # one-band flow matching through fourier
  net1 = _model(num_slots=1)
  x = jax.random.normal(jax.random.PRNGKey(10), (4,) + SHAPE)
  t = jnp.array([0.1, 0.3, 0.7, 0.9])
  y = jnp.array([[1, 7]] * 4, jnp.int32)
  cfg = lambda yy: guidance.cfg_velocity(net1, path, yy, num_classes=C,
                                         guidance=2.0)(x, t)
  sw = label_baselines.switched_velocity(net1, path, y, (0.5,), num_classes=C,
                                   guidance=2.0)(x, t)
  np.testing.assert_array_equal(sw[:2], cfg(y[:, 0])[:2])
  np.testing.assert_array_equal(sw[2:], cfg(y[:, 1])[2:])
  split = paths.make_path(path.transform, num_scales=2)
  fac = label_baselines.factorized_velocity(net1, path, split, y, num_classes=C,
                                      guidance=2.0)(x, t)
  tr = path.transform
  low = split.band == 0
  want = tr.inverse(jnp.where(low, tr.forward(cfg(y[:, 0])),
                              tr.forward(cfg(y[:, 1]))))
  np.testing.assert_allclose(fac, want, rtol=1e-5, atol=1e-5)
  same = label_baselines.factorized_velocity(net1, path, split, y[:, :1].repeat(
      2, 1), num_classes=C, guidance=2.0)(x, t)
  np.testing.assert_allclose(same, cfg(y[:, 0]), rtol=1e-4, atol=1e-4)
  # Spec: rows of one label per span; refused on slot runs and unlabelled.
  scfg = sections.sample_defaults()
  scfg.label_switch_t = (0.4,)
  assert generate.parse_spec(scfg, C, 2).num_labels == 2
  with pytest.raises(ValueError, match="class-conditional run"):
    generate.parse_spec(scfg, 0, 2)
  scfg.slot_labels = ((3, 8),)
  spec = generate.parse_spec(scfg, C, 2)
  assert spec.num_labels == 2 and spec.extra_times == (0.4,)
  assert "_switch0.4" in generate.sample_tag(spec, 1)
  with pytest.raises(ValueError, match="without\n?.*slot_starts|without"):
    generate.parse_spec(scfg, C, 2, num_slots=2)
  scfg.factorized_cutoffs = (0.0, 0.5, 1.0)
  with pytest.raises(ValueError, match="only one of"):
    generate.parse_spec(scfg, C, 2)
  scfg.label_switch_t = ()
  spec = generate.parse_spec(scfg, C, 2)
  assert spec.num_labels == 2 and spec.extra_times == ()
  scfg.factorized_cutoffs = (0.5,)
  with pytest.raises(ValueError, match="band edges from 0 to 1"):
    generate.parse_spec(scfg, C, 2)
  scfg.label_switch_t = (1.4,)
  scfg.factorized_cutoffs = ()
  with pytest.raises(ValueError, match="increasing times"):
    generate.parse_spec(scfg, C, 2)
