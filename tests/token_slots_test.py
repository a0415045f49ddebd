"""Token (caption) condition slots: captions, the text encoder, labels
[B, K, L] through the slot machinery, pretrained encoders, the run.

Every check compares against a quantity computed here independently (the
encoder applied by hand, the null-embedding parameter, the other caption's
sample), so each fails if the option it tests is ignored or misapplied.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kflow_jax import config_lib
from kflow_jax import generate
from kflow_jax import kamp
from kflow_jax import models
from kflow_jax.config_lib import sections
from kflow_jax.data import captions as captions_lib
from kflow_jax.data import input_pipeline
from kflow_jax.flow import paths
from kflow_jax.flow import sampling
from kflow_jax.flow import slots as slots_lib
from kflow_jax.flow import token_slots
from kflow_jax.models import text as text_lib

import perturb

SHAPE = (8, 8, 1)
C = 10
L = 6
SPEC = text_lib.TextSpec(vocab_size=32, max_tokens=L, width=16, depth=1,
                         heads=2)
KEY = lambda i: jax.random.key(i, impl="rbg")
SOURCE = captions_lib.get("digits")


def _cond(kinds=("class", "tokens"), **text):
  c = config_lib.base().cond
  c.slot_starts = (0, 1)
  c.slot_kinds = kinds
  c.text.update(dict(max_tokens=L, width=16, depth=1, heads=2), **text)
  return c


def _path():
  return paths.make_path(kamp.get("fourier", shape=SHAPE), num_scales=2)


def _slots(path, kinds=("class", "tokens"), captions="digits", **kw):
  cond = _cond(kinds)
  cond.update(kw)
  s = slots_lib.parse(cond, num_bands=path.num_bands, num_classes=C,
                      label_dropout=0.1, transform=path.transform)
  return token_slots.parse(cond, s, captions=captions)


def _tok(text):
  return captions_lib.tokenize(SOURCE, text, L)


# ---------------------------------------------------------------- captions


def test_tokenizer_round_trip_and_errors():
  ids = _tok("A handwritten 3")
  assert ids.dtype == np.int32 and ids.shape == (L,)
  assert np.all(ids[:3] > 0) and np.all(ids[3:] == 0)
  assert captions_lib.detokenize(SOURCE, ids) == "a handwritten 3"
  np.testing.assert_array_equal(_tok(""), np.zeros(L, np.int32))
  with pytest.raises(ValueError, match="'dog' is not in the vocabulary"):
    _tok("a handwritten dog")
  with pytest.raises(ValueError, match="<pad>"):
    _tok("<pad>")
  with pytest.raises(ValueError, match="at most 2"):
    captions_lib.tokenize(SOURCE, "the digit three", 2)
  with pytest.raises(ValueError, match="caption source"):
    captions_lib.get("poems")


def test_captions_are_seeded_per_image_and_name_the_class():
  texts = [captions_lib.caption(SOURCE, 3, i, seed=0) for i in range(60)]
  assert texts == [captions_lib.caption(SOURCE, 3, i, seed=0)
                   for i in range(60)]
  assert texts != [captions_lib.caption(SOURCE, 3, i, seed=1)
                   for i in range(60)]
  assert len(set(texts)) >= 8   # templates x synonyms x adjectives
  assert all(t.split()[-1] in ("three", "3") for t in texts)
  assert max(len(t.split()) for t in texts) <= SOURCE.max_words
  assert captions_lib.canonical(SOURCE, 8) == "the digit eight"


def test_pipeline_adds_each_images_caption():
  cfg = sections.input_defaults()
  cfg.captions = "digits"
  cfg.num_threads = 0
  batch = next(input_pipeline.create(cfg, global_batch_size=16, seed=0))
  caps = np.asarray(batch["caption"])
  assert caps.shape == (16, SOURCE.max_words) and caps.dtype == np.int32
  for label, row in zip(np.asarray(batch["label"]), caps):
    word = captions_lib.detokenize(SOURCE, row).split()[-1]
    assert word in SOURCE.class_names[label]
  cfg.name = "natural_patches"
  with pytest.raises(ValueError, match="describes the classes 0..9"):
    next(input_pipeline.create(cfg, global_batch_size=16, seed=0))


# ----------------------------------------------------------------- models


def test_encoder_ignores_padding_and_null_caption_is_the_null_embedding():
  enc = text_lib.TextEncoder(SPEC)
  tokens = jnp.asarray(np.stack([_tok("a handwritten 3"),
                                 _tok("the digit eight")]))
  # Jitted: eagerly, each op of the attention compiles on its own.
  enc_apply = jax.jit(enc.apply)
  p = jax.jit(enc.init)(KEY(0), tokens)
  full = enc_apply(p, tokens)
  assert full.shape == (2, 16)
  # Trailing padding changes nothing (it never enters the attention).
  np.testing.assert_allclose(enc_apply(p, tokens[:, :3]), full, atol=1e-6)
  emb = text_lib.SlotEmbedder(C, 24, ("class", "tokens"), SPEC)
  y = jnp.stack([jnp.zeros((2, L), jnp.int32).at[:, 0].set(4), tokens], 1)
  v = jax.jit(emb.init, static_argnums=2)(KEY(1), y, 2)
  emb_apply = jax.jit(emb.apply, static_argnums=2)
  params = nn.meta.unbox(v)["params"]
  null_y = y.at[:, 1].set(0)
  out = emb_apply(v, null_y, 2)
  want = params["embedding"][4] + params["null_caption"][0]
  np.testing.assert_allclose(out, jnp.stack([want] * 2), atol=1e-6)
  # y=None: every slot null (class slot: the null class row).
  np.testing.assert_allclose(
      emb_apply(v, None, 2), jnp.stack(
          [params["embedding"][C] + params["null_caption"][0]] * 2),
      atol=1e-6)
  # A caption: the encoder's vector through the slot's projection.
  enc_v = enc_apply({"params": params["encoder"]}, tokens)
  np.testing.assert_allclose(
      emb_apply(v, y, 2),
      params["embedding"][4] + enc_v @ params["token_proj"][0], atol=1e-5)


# The MLP in the fast tier; DiT and U-Net (20-40 s of compiling on 2
# cores) in -m slow.
@pytest.mark.parametrize("name,kw", [
    ("mlp", dict(size="mu")),
    pytest.param("dit", dict(size="mu", patch_size=2),
                 marks=pytest.mark.slow),
    pytest.param("unet", dict(size="mu"), marks=pytest.mark.slow)])
def test_backbones_take_token_slot_labels(name, kw):
  m = models.get(name, num_classes=C, num_slots=2,
                 slot_kinds=("class", "tokens"), text=SPEC, **kw)
  x, t = jnp.zeros((2,) + SHAPE), jnp.full((2,), 0.5)
  y = jnp.zeros((2, 2, L), jnp.int32)
  v = jax.jit(m.init)(KEY(0), x, t, y)
  assert "encoder" in v["params"]["y_embedder"]
  apply = jax.jit(m.apply)
  assert apply(v, x, t, y).shape == (2,) + SHAPE
  with pytest.raises(ValueError, match=r"\[2, 2, 6\]"):
    apply(v, x, t, jnp.zeros((2, 2), jnp.int32))
  with pytest.raises(ValueError, match="slot_kinds"):
    models.get(name, num_classes=C, num_slots=2, slot_kinds=("class",),
               text=SPEC, **kw)


def test_class_kinds_keep_the_class_only_model_and_slots():
  """slot_kinds all "class" (or None) is the class-only run: the same
  Slots, and the same backbone params tree and init, to the bit."""
  path = _path()
  ref = _slots(path, kinds=None)
  assert _slots(path, kinds=("class", "class")) is not None
  assert _slots(path, kinds=("class", "class")) == ref
  assert ref.kinds == () and ref.max_tokens == 0
  x, t = jnp.zeros((2,) + SHAPE), jnp.zeros((2,))
  y = jnp.zeros((2, 2), jnp.int32)
  a = jax.jit(models.get("mlp", size="mu", num_classes=C, num_slots=2).init)(
      KEY(0), x, t, y)
  b = jax.jit(models.get("mlp", size="mu", num_classes=C, num_slots=2,
                         slot_kinds=("class", "class")).init)(KEY(0), x, t, y)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(u, w)


# ------------------------------------------------------------------ slots


def test_parse_errors_name_the_fix():
  path = _path()
  with pytest.raises(ValueError, match="one per|each of the 2 slots"):
    _slots(path, kinds=("tokens",))
  with pytest.raises(ValueError, match="each in"):
    _slots(path, kinds=("class", "words"))
  with pytest.raises(ValueError, match="config.input.captions"):
    _slots(path, captions="")
  with pytest.raises(ValueError, match="encoder_path"):
    cond = _cond()
    cond.text.freeze = True
    token_slots.parse(cond, _slots(path, kinds=None), captions="digits")
  with pytest.raises(ValueError, match="vocab_size"):
    cond = _cond(vocab_size=5)
    token_slots.parse(cond, _slots(path, kinds=None), captions="digits")
  with pytest.raises(ValueError, match="max_tokens"):
    cond = _cond(max_tokens=2)
    token_slots.parse(cond, _slots(path, kinds=None), captions="digits")
  with pytest.raises(ValueError, match="slot_starts"):
    token_slots.parse(_cond(), None, captions="digits")
  s = _slots(path)
  assert s.kinds == ("class", "tokens") and s.max_tokens == L
  assert s.text.vocab_size == SOURCE.vocab_size


def test_labels_nulls_drops_and_class_conversion():
  path = _path()
  s = _slots(path, slot_dropout=0.2)
  y = jnp.asarray(token_slots.caption_rows(
      s, (("3", "a handwritten eight"), ("", "the digit one"), ("5", ""))))
  assert y.shape == (3, 2, L)
  np.testing.assert_array_equal(y[0, 1], _tok("a handwritten eight"))
  np.testing.assert_array_equal(y[1, 0], [C] + [0] * (L - 1))
  null = np.asarray(slots_lib.null_of(s))
  np.testing.assert_array_equal(null[0], [C] + [0] * (L - 1))
  np.testing.assert_array_equal(null[1], np.zeros(L))
  # Classes -> labels: a token slot takes the class's canonical caption,
  # -1 or the null class the empty caption.
  z = np.asarray(slots_lib.as_slots(s, jnp.array([[3, 8], [2, -1]])))
  np.testing.assert_array_equal(z[0, 0], [3] + [0] * (L - 1))
  np.testing.assert_array_equal(z[0, 1], _tok("the digit eight"))
  np.testing.assert_array_equal(z[1, 1], np.zeros(L))
  # Visibility: band 0 (t small) may not read slot 1 -> its null caption.
  vis = np.asarray(slots_lib.visible_labels(s, path, y, jnp.zeros((3,))))
  np.testing.assert_array_equal(vis[:, 1], np.zeros((3, L)))
  np.testing.assert_array_equal(vis[0, 0], y[0, 0])
  # Dropout events null whole slots: a class slot's null class, a token
  # slot's empty caption, never a part of a caption.
  b = 400
  yb = jnp.broadcast_to(y[:1], (b, 2, L))
  d = np.asarray(jax.jit(lambda k, y: slots_lib.drop_events(s, k, y))(
      jax.random.split(KEY(3), b), yb))
  dropped0 = d[:, 0, 0] == C
  dropped1 = np.all(d[:, 1] == 0, axis=1)
  kept1 = np.all(d[:, 1] == np.asarray(y[0, 1]), axis=1)
  assert np.all(dropped1 | kept1)
  assert 0 < dropped0.sum() < b and 0 < dropped1.sum() < b


def test_band_mix_gives_fine_slots_the_neighbours_caption():
  path = _path()
  s = _slots(path, band_mix=1.0)
  b = 8
  x = jax.random.normal(KEY(1), (b,) + SHAPE)
  cls = jnp.arange(b, dtype=jnp.int32) % C
  caps = jnp.asarray(np.stack([_tok(captions_lib.caption(SOURCE, int(c), i,
                                                         0))
                               for i, c in enumerate(cls)]))
  y = slots_lib.batch_labels(s, {"label": cls, "caption": caps})
  xm, ym = jax.jit(lambda x, y, k: slots_lib.band_mix(s, path, x, y, k))(
      x, y, jax.random.split(KEY(2), b))
  ym = np.asarray(ym)
  for i in range(b):
    np.testing.assert_array_equal(ym[i, 0, 0], cls[i])     # coarse: own
    np.testing.assert_array_equal(ym[i, 1], caps[(i + 1) % b])  # fine
  assert not np.allclose(xm, x)


def _model(kinds=("class", "tokens")):
  m = models.get("mlp", hidden=32, depth=2, num_classes=C, num_slots=2,
                 slot_kinds=kinds, text=SPEC._replace(
                     vocab_size=SOURCE.vocab_size))
  y = jnp.zeros((1, 2, L), jnp.int32)
  params = jax.jit(m.init)(KEY(0), jnp.zeros((1,) + SHAPE), jnp.zeros((1,)),
                           y)["params"]
  params = perturb.perturbed(params, 5, 0.3)
  return lambda x, t, y: m.apply({"params": params}, x, t, y)


# Slow tier: the same property for class slots is fast in tests/slots_test.py;
# this is its caption twin (a text encoder to compile).
@pytest.mark.slow
def test_coarse_bands_do_not_depend_on_the_fine_caption_bit_for_bit():
  """Causal slots, no overlap, band projection: band 0 of a sample is the
  same for any fine-slot caption, to the bit (same noise); with
  visibility "all" it is not."""
  path = _path()
  x0 = jax.random.normal(jax.random.PRNGKey(7), (4,) + SHAPE)

  def coefs(caption, s):
    net = slots_lib.network(s, path, _model())
    y = jnp.asarray(token_slots.caption_rows(s, (("3", caption),) * 4))
    v = slots_lib.guided_velocity(net, path, s, y,
                                  slots_lib.guidance_matrix(s, guidance=2.0))
    return np.asarray(sampling.sample(v, path, x0, solver="heun",
                                      num_steps=8, project=True,
                                      return_coefficients=True))

  s = _slots(path)
  coarse = path.band == 0
  a, b = coefs("a handwritten eight", s), coefs("the digit one", s)
  np.testing.assert_array_equal(a[:, coarse], b[:, coarse])
  assert np.max(np.abs(a[:, ~coarse] - b[:, ~coarse])) > 1e-3
  s_all = s._replace(visibility="all")
  a, b = (coefs(c, s_all) for c in ("a handwritten eight", "the digit one"))
  assert np.max(np.abs(a[:, coarse] - b[:, coarse])) > 1e-4


def test_sample_spec_slot_captions():
  path = _path()
  s = _slots(path)
  scfg = sections.sample_defaults()
  scfg.slot_captions = (("3", "a scribbled eight"), ("", ""))
  spec = generate.parse_spec(scfg, C, 2, num_slots=2, slots=s)
  assert spec.slot_captions == (("3", "a scribbled eight"), ("", ""))
  assert "_slots" in generate.sample_tag(spec, 1)
  with pytest.raises(ValueError, match="has none"):
    generate.parse_spec(scfg, C, 2, num_slots=2,
                        slots=_slots(path, kinds=None))
  scfg.slot_captions = (("3", "a scribbled cat"),)
  with pytest.raises(ValueError, match="'cat' is not in the vocabulary"):
    generate.parse_spec(scfg, C, 2, num_slots=2, slots=s)
  scfg.slot_captions = (("three", "eight"),)
  with pytest.raises(ValueError, match="class id"):
    generate.parse_spec(scfg, C, 2, num_slots=2, slots=s)
  scfg.slot_captions = (("3",),)
  with pytest.raises(ValueError, match="2 strings"):
    generate.parse_spec(scfg, C, 2, num_slots=2, slots=s)
  scfg.slot_captions = (("3", "eight"),)
  scfg.slot_labels = ((3, 8),)
  with pytest.raises(ValueError, match="set one"):
    generate.parse_spec(scfg, C, 2, num_slots=2, slots=s)


def test_sample_labels_of_caption_rows_and_their_grid_rows():
  from kflow_jax.generate import sampler  # pylint: disable=g-import-not-at-top
  s = _slots(_path())
  scfg = sections.sample_defaults()
  scfg.slot_captions = (("3", "a scribbled eight"), ("3", ""))
  spec = generate.parse_spec(scfg, C, 2, num_slots=2, slots=s)
  y = np.asarray(sampler.labels_of(C, spec, jnp.arange(5), s))
  assert y.shape == (5, 2, L)
  np.testing.assert_array_equal(y[2], y[0])
  np.testing.assert_array_equal(y[0, 1], _tok("a scribbled eight"))
  assert not y[1, 1].any()
  layout = sampler.grid_layout(C, y)
  np.testing.assert_array_equal(layout["labels"], [0, 1, 0, 1, 0])
  assert layout["num_classes"] == 2
  # Without rows every slot reads the class i % C (a caption slot its
  # canonical caption once the labels reach the network).
  spec = generate.parse_spec(sections.sample_defaults(), C, 2, num_slots=2,
                             slots=s)
  y = sampler.labels_of(C, spec, jnp.arange(3), s)
  z = np.asarray(slots_lib.as_slots(s, y))
  np.testing.assert_array_equal(z[2, 1], _tok("the digit two"))


# ------------------------------------------------- pretrained encoder, run


def _digits_config(**text):
  c = config_lib.base()
  config_lib.set_bands(c, "fourier", 2)
  c = config_lib.digit_recipe(c, "fourier", cond=True, local=True,
                              captions=True)
  c.model = ml_collections.ConfigDict(dict(
      name="mlp", size="mu", dtype="float32", scale_adaptive=False))
  c.cond.text.update(text)
  return c


def _saved_encoder(tmp_path):
  spec = text_lib.TextSpec(vocab_size=SOURCE.vocab_size + 3, max_tokens=7,
                           width=8, depth=1, heads=2, pool="cls")
  enc = text_lib.TextEncoder(spec)
  tokens = jnp.asarray(np.stack([np.pad(_tok("the digit eight"), (0, 1)),
                                 np.pad(_tok("a drawn 3"), (0, 1))]))
  saved = enc.init(KEY(4), tokens)["params"]
  d = str(tmp_path / "encoder")
  text_lib.save_encoder(d, saved, spec)
  assert json.load(open(os.path.join(d, "encoder.json")))["width"] == 8
  return spec, enc, tokens, saved, d


def test_pretrained_encoder_settings_that_contradict_it_are_refused(
    tmp_path):
  from kflow_jax.run import experiment  # pylint: disable=g-import-not-at-top
  _, _, _, _, d = _saved_encoder(tmp_path)
  with pytest.raises(ValueError, match="width=16.*has width=8"):
    experiment.setup(_digits_config(width=16, encoder_path=d), None,
                     "train")
  c = _digits_config(width=None, depth=None, heads=None, max_tokens=None,
                     encoder_path=d, freeze=True)
  c.optim.weight_decay = 0.1
  with pytest.raises(ValueError, match="weight_decay"):
    experiment.setup(c, None, "train")
  with pytest.raises(ValueError, match="lacks"):
    text_lib.load_encoder(str(tmp_path))


# Slow tier: a model initialised and a training step compiled; the
# refusals above are fast.
@pytest.mark.slow
def test_pretrained_encoder_is_loaded_and_frozen(tmp_path):
  from kflow_jax.run import experiment  # pylint: disable=g-import-not-at-top
  spec, enc, tokens, saved, d = _saved_encoder(tmp_path)
  c = _digits_config(width=None, depth=None, heads=None, max_tokens=None,
                     encoder_path=d, freeze=True)
  c.optim.weight_decay = 0.0
  run = experiment.setup(c, None, "train", devices=jax.devices()[:1])
  assert run.slots.text == spec
  state = run.init_state()
  got = state.params["y_embedder"]["encoder"]
  want = nn.meta.unbox(saved)
  for u, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(u, w)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  # The same encoding as the encoder applied by hand with the saved params.
  np.testing.assert_allclose(enc.apply({"params": got}, tokens),
                             enc.apply({"params": saved}, tokens), atol=0)
  # Frozen: a training step's gradient leaves it alone, not the rest.
  cfg = c.input
  batch = next(input_pipeline.create(cfg, global_batch_size=16, seed=0))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  keys = jax.random.split(jax.random.PRNGKey(0), 16)
  _, _, grads = jax.jit(run.field.loss_and_grad)(state.params, batch, keys)
  g = grads["y_embedder"]
  assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(
      g["encoder"]))
  assert np.any(np.asarray(g["token_proj"]) != 0)
