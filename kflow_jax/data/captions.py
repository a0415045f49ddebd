"""Captions: token sequences per image, for token condition slots.

A caption source (`SOURCES`, config.input.captions) owns a small fixed word
vocabulary and a rule that gives every image of a labelled data set a
caption from its class. "digits" (digits, mnist5k) draws, for image i of a
split, one of several templates and synonyms with a generator seeded by
(config.input.caption_seed, i): "three", "a handwritten 3", "the digit
three", ... The caption is a property of the image (the same on every
epoch and process), and the choice among the phrasings teaches a text
encoder that they mean the same digit.

The tokenizer is whitespace words -> ids, lower-cased; id 0 is padding, so
an all-zero row is the empty (null) caption. A word outside the vocabulary
is an error naming the vocabulary (no unknown-word token: a typo in a
sampling caption must not silently become another condition).

`input_pipeline.create` adds "caption": int32 [max_words] to every batch of
a config with captions (`CaptionedSource`, `WithCaption`).
"""
from typing import NamedTuple, Sequence

import grain
import numpy as np

from kflow_jax.infra import registry

PAD = "<pad>"


class Source(NamedTuple):
  """A caption source: its vocabulary (words[0] is PAD) and its phrasings.

  templates: format strings over {name} (a class's word or numeral) and
    {adj}; canonical: the template of `canonical` (sampling a class slot's
    caption, --mode=hybrid on a caption slot).
  """
  name: str
  words: tuple
  class_names: tuple        # per class: its synonyms for {name}
  adjectives: tuple
  templates: tuple
  canonical: str

  @property
  def vocab_size(self) -> int:
    """Ids 0..vocab_size - 1 (0 = padding)."""
    return len(self.words)

  @property
  def max_words(self) -> int:
    """Words in the longest caption the source writes."""
    return max(len(t.split()) for t in self.templates)


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six",
                 "seven", "eight", "nine")
_DIGIT_TEMPLATES = ("{name}", "a {adj} {name}", "the digit {name}",
                    "{adj} digit {name}", "the number {name}",
                    "a {adj} number {name}")
_DIGIT_ADJECTIVES = ("handwritten", "scribbled", "drawn")


def _digits() -> Source:
  names = tuple((w, str(i)) for i, w in enumerate(_NUMBER_WORDS))
  words = {w for t in _DIGIT_TEMPLATES for w in t.split() if "{" not in w}
  words |= set(_DIGIT_ADJECTIVES) | {w for n in names for w in n}
  return Source(name="digits", words=(PAD,) + tuple(sorted(words)),
                class_names=names, adjectives=_DIGIT_ADJECTIVES,
                templates=_DIGIT_TEMPLATES, canonical="the digit {name}")


SOURCES = registry.Registry("caption source", "config.input.captions")
SOURCES.register("digits", _digits)
# Data sets whose class i is the digit i, which "digits" captions describe.
DIGIT_SETS = ("digits", "mnist5k")


def get(name: str) -> Source:
  return SOURCES.get(name)()


def check(config_input) -> None:
  """config.input.captions against the data set: a source and a data set
  whose classes it describes."""
  name = str(config_input.captions)
  if not name:
    return
  SOURCES.get(name)
  if name == "digits" and config_input.name not in DIGIT_SETS:
    raise ValueError(
        f"config.input.captions='digits' describes the classes 0..9 as "
        f"digits; data set {config_input.name!r} is not one of "
        f"{list(DIGIT_SETS)}. Use one of those or captions=''.")


def caption(source: Source, label: int, index: int, seed: int) -> str:
  """The caption of example `index` (of class `label`): a pure function of
  (seed, index, label)."""
  label = int(label)
  if not 0 <= label < len(source.class_names):
    raise ValueError(f"caption source {source.name!r} describes classes "
                     f"0..{len(source.class_names) - 1}, got {label}.")
  rng = np.random.default_rng([int(seed), int(index)])
  template = source.templates[rng.integers(len(source.templates))]
  name = source.class_names[label][rng.integers(
      len(source.class_names[label]))]
  adj = source.adjectives[rng.integers(len(source.adjectives))]
  return template.format(name=name, adj=adj)


def canonical(source: Source, label: int) -> str:
  """The one caption of class `label` used where only a class is given."""
  return source.canonical.format(name=source.class_names[int(label)][0])


def tokenize(source: Source, text: str, max_tokens: int) -> np.ndarray:
  """int32 [max_tokens]: the words' ids, then padding; "" -> all padding
  (the null caption)."""
  words = str(text).lower().split()
  index = {w: i for i, w in enumerate(source.words)}
  unknown = [w for w in words if w not in index or w == PAD]
  if unknown:
    raise ValueError(
        f"caption {text!r}: word {unknown[0]!r} is not in the vocabulary of "
        f"caption source {source.name!r}; its words are "
        f"{list(source.words[1:])}.")
  if len(words) > max_tokens:
    raise ValueError(
        f"caption {text!r} has {len(words)} words; at most {max_tokens} "
        "(config.cond.text.max_tokens) fit. Shorten it or raise max_tokens.")
  out = np.zeros((int(max_tokens),), np.int32)
  out[:len(words)] = [index[w] for w in words]
  return out


def detokenize(source: Source, tokens: Sequence[int]) -> str:
  """The words of a token row, padding dropped."""
  return " ".join(source.words[int(i)] for i in tokens if int(i))


class CaptionedSource:
  """A data source whose record i gains "caption": int32 [max_words], the
  caption of (seed, i, its label). Picklable (grain workers)."""

  def __init__(self, source, captions: Source, seed: int):
    self._source = source
    self._captions = captions
    self._seed = int(seed)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    record = dict(self._source[index])
    text = caption(self._captions, record["label"], index, self._seed)
    record["caption"] = tokenize(self._captions, text,
                                 self._captions.max_words)
    return record


class WithCaption(grain.transforms.RandomMap):
  """A family's transform, with the record's caption passed through."""

  def __init__(self, transform):
    self.transform = transform

  def random_map(self, element, rng: np.random.Generator):
    out = self.transform.random_map(element, rng)
    out["caption"] = np.asarray(element["caption"], np.int32)
    return out
