"""Token (caption) condition slots: config.cond.slot_kinds and the labels
[B, K, L] of a run that has them (docs/method.md#condition-slots).

`parse` adds the kinds, the text encoder's TextSpec (models/text.py) and
the caption vocabulary (data/captions.py, config.input.captions) to the
run's `slots.Slots`; a run whose slots are all classes is returned
unchanged, so it computes what it did before token slots existed.

Labels of a run with token slots are int32 [B, K, L] (L =
config.cond.text.max_tokens): a class slot holds its class id at position
0 and zeros after it (null: num_classes), a token slot a caption's tokens
(null: all padding). Where only classes are known (sampling without
caption rows, --mode=hybrid, config.sample.slot_labels) a token slot given
class c reads c's canonical caption ("the digit three"; `from_classes`).
"""
import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.data import captions as captions_lib
from kflow_jax.models import text as text_lib

# Defaults of config.cond.text (None there) for an encoder trained here.
DEFAULTS = dict(max_tokens=8, width=64, depth=2, heads=4, pool="mean")


def parse(cond, slots, *, captions: str):
  """config.cond.slot_kinds and config.cond.text checked against the run
  (`slots` from slots.parse, or None; `captions`: config.input.captions);
  returns `slots` with its token fields, or unchanged for class slots."""
  kinds = tuple(str(k) for k in (cond.slot_kinds or ()))
  text = cond.text
  uses_encoder = [k for k, on in (("encoder_path", bool(text.encoder_path)),
                                  ("freeze", bool(text.freeze))) if on]
  if slots is None:
    if kinds or uses_encoder:
      key = "slot_kinds" if kinds else f"text.{uses_encoder[0]}"
      raise ValueError(
          f"config.cond.{key} is for runs with condition slots: set "
          "config.cond.slot_starts (at least two slots, e.g. (0, 1)) or "
          "reset it.")
    return None
  k = slots.num_slots
  if kinds and (len(kinds) != k or set(kinds) - set(text_lib.KINDS)):
    raise ValueError(
        f"config.cond.slot_kinds={kinds} must name the kind of each of the "
        f"{k} slots, each in {list(text_lib.KINDS)}: e.g. ('class', "
        "'tokens') for a class slot on the coarse bands and a caption slot "
        "on the fine ones; None for class slots only.")
  if "tokens" not in kinds:
    if uses_encoder:
      raise ValueError(
          f"config.cond.text.{uses_encoder[0]} sets the text encoder of token "
          "slots; this run has none (config.cond.slot_kinds): reset it, or "
          "give a slot the kind 'tokens'.")
    return slots
  if slots.fine_classes:
    raise ValueError(
        f"config.cond.mix_fine_classes={slots.fine_classes} pairs hybrids by "
        "class, which is not built for runs with token slots "
        f"(config.cond.slot_kinds={kinds}); reset it to () or use class "
        "slots only.")
  if not captions:
    raise ValueError(
        f"config.cond.slot_kinds={kinds} has token slots, which read each "
        "image's caption: set config.input.captions (e.g. 'digits' for the "
        "digits and mnist5k data sets).")
  source = captions_lib.get(captions)
  spec = _text_spec(text, source)
  if slots.num_classes > len(source.class_names):
    raise ValueError(
        f"caption source {captions!r} describes {len(source.class_names)} "
        f"classes; the data set has {slots.num_classes}.")
  canonical = tuple(
      tuple(int(v) for v in captions_lib.tokenize(
          source, captions_lib.canonical(source, c), spec.max_tokens))
      for c in range(slots.num_classes))
  return slots._replace(kinds=kinds, text=spec, captions=captions,
                        canonical=canonical,
                        encoder_path=str(text.encoder_path),
                        freeze=bool(text.freeze))


def _text_spec(text, source) -> text_lib.TextSpec:
  """config.cond.text -> TextSpec: the pretrained encoder's (a set key must
  agree with it), else the set keys over DEFAULTS."""
  keys = text_lib.TextSpec._fields
  given = {f: text[f] for f in keys if text[f] is not None}
  if text.encoder_path:
    spec = text_lib.read_spec(str(text.encoder_path))
    differ = {f: (v, getattr(spec, f)) for f, v in given.items()
              if v != getattr(spec, f)}
    if differ:
      f, (mine, theirs) = next(iter(differ.items()))
      raise ValueError(
          f"config.cond.text.{f}={mine!r}, but the pretrained encoder at "
          f"{text.encoder_path!r} has {f}={theirs!r}: leave "
          f"config.cond.text.{f} unset (None) to take the encoder's.")
  elif text.freeze:
    raise ValueError(
        "config.cond.text.freeze keeps a pretrained encoder as loaded; set "
        "config.cond.text.encoder_path, or freeze=False.")
  else:
    spec = text_lib.TextSpec(**{"vocab_size": source.vocab_size,
                                **DEFAULTS, **given}).check()
  if spec.vocab_size < source.vocab_size:
    raise ValueError(
        f"the text encoder's vocab_size ({spec.vocab_size}) is smaller than "
        f"caption source {source.name!r}'s vocabulary ({source.vocab_size} "
        "ids with padding): raise config.cond.text.vocab_size or leave it "
        "None.")
  if spec.max_tokens < source.max_words:
    raise ValueError(
        f"the text encoder takes {spec.max_tokens} tokens, but caption "
        f"source {source.name!r} writes captions of up to "
        f"{source.max_words} words: raise config.cond.text.max_tokens.")
  return spec


def null_row(slots) -> jax.Array:
  """int32 [K, L]: every slot's null label (see the module doc)."""
  first = [slots.num_classes if k == "class" else 0 for k in slots.kinds]
  return jnp.zeros((slots.num_slots, slots.max_tokens), jnp.int32).at[
      :, 0].set(jnp.asarray(first, jnp.int32))


def check_shape(slots, y: jax.Array) -> jax.Array:
  want = (slots.num_slots, slots.max_tokens)
  if tuple(y.shape[1:]) != want:
    raise ValueError(
        f"labels of a run with token slots must be [B, {want[0]}, {want[1]}]"
        f" (slots x config.cond.text.max_tokens), got {tuple(y.shape)}.")
  return y


def from_classes(slots, y: jax.Array) -> jax.Array:
  """Class labels [B, K] -> [B, K, L]: a class slot keeps its label at
  position 0; a token slot given class c in 0..C-1 takes c's canonical
  caption, any other value (null, -1) the null caption."""
  c = slots.num_classes
  table = jnp.concatenate([jnp.asarray(slots.canonical, jnp.int32),
                           jnp.zeros((1, slots.max_tokens), jnp.int32)])
  caption = table[jnp.where((y >= 0) & (y < c), y, c)]
  as_class = jnp.zeros_like(caption).at[..., 0].set(y)
  is_class = jnp.asarray([k == "class" for k in slots.kinds])
  return jnp.where(is_class[None, :, None], as_class, caption)


def with_captions(slots, y: jax.Array, caption) -> jax.Array:
  """y [B, K, L] with every token slot set to the batch's captions [B, L']
  (L' <= L, padded)."""
  if caption is None:
    raise ValueError(
        "a run with token slots needs captions in its batches: set "
        "config.input.captions (e.g. 'digits').")
  caption = jnp.asarray(caption, jnp.int32)
  pad = slots.max_tokens - caption.shape[-1]
  if caption.ndim != 2 or pad < 0:
    raise ValueError(
        f"batch captions must be [B, <= {slots.max_tokens}], got "
        f"{tuple(caption.shape)}.")
  caption = jnp.pad(caption, ((0, 0), (0, pad)))
  is_token = jnp.asarray([k == "tokens" for k in slots.kinds])
  return jnp.where(is_token[None, :, None], caption[:, None], y)


def caption_rows(slots, rows) -> np.ndarray:
  """config.sample.slot_captions -> int32 [R, K, L]: rows of K strings, a
  caption for a token slot, a class id for a class slot, "" = null."""
  source = captions_lib.get(slots.captions)
  out = []
  for row in rows:
    row = tuple(row)
    if len(row) != slots.num_slots or not all(isinstance(v, str)
                                              for v in row):
      raise ValueError(
          f"config.sample.slot_captions row {row} must hold "
          f"{slots.num_slots} strings (one per slot, kinds {slots.kinds}): "
          "a caption for a token slot, a class id for a class slot, \"\" "
          "for none; e.g. (('3', 'a handwritten eight'),).")
    labels = []
    for kind, value in zip(slots.kinds, row):
      if kind == "tokens":
        labels.append(captions_lib.tokenize(source, value, slots.max_tokens))
        continue
      cls = _class_id(value, slots.num_classes)
      labels.append(np.zeros((slots.max_tokens,), np.int32))
      labels[-1][0] = slots.num_classes if cls < 0 else cls
    out.append(np.stack(labels))
  return np.asarray(out, np.int32)


def _class_id(value: str, num_classes: int) -> int:
  if not value.strip():
    return -1
  try:
    cls = int(value)
  except ValueError:
    cls = None
  if cls is None or not -1 <= cls < num_classes:
    raise ValueError(
        f"config.sample.slot_captions: a class slot takes a class id in "
        f"0..{num_classes - 1} as a string (or \"\" for none), got "
        f"{value!r}.")
  return cls
