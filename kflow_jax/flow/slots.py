"""Condition slots: one label per group of bands (docs/method.md#condition-slots).

A run with condition slots (`config.cond.slot_starts`, K >= 2 entries)
takes labels y [B, K]. Slot k owns the contiguous bands slot_starts[k] ..
slot_starts[k+1] - 1 and has its own rows in the model's label table
(models/layers.LabelEmbedder). Which slots the network reads while band s
flows is the visibility (`VISIBILITIES`):

  causal   the slots that start at or before band s (the default): a
           coarse band never reads a finer slot, so with band projection
           and no overlap the coarse bands of a sample do not depend on the
           finer labels at all (tests/slots_test.py checks it bit for bit)
  active   only the slot that owns band s
  all      every slot

A slot the network may not read is given the null label (`visible_labels`,
applied by `network` in training and sampling alike).

Training makes every slot obeyed (a model trained on one label per image
learns to ignore a fine label that disagrees with the coarse bands):
  - disjoint dropout events per example (`drop_events`): every slot null
    with probability config.label_dropout (trains v(null)), only slot k
    null with config.cond.slot_dropout each (trains the guidance terms
    that leave one slot out);
  - band-mixed hybrids (`band_mix`): with probability config.cond.band_mix
    an example becomes T^-1(M T x_i + (1 - M) T x_j), the bands of the
    slots before a random slot boundary from x_i and the rest from its
    neighbour j = i + 1 in the global batch, each slot labelled with the
    class of the image its bands came from. Exact because T is orthonormal
    (the same requirement as noise mixing, steering.check_mixable). With
    config.cond.mix_fine_classes (plan E3: colour photos in the coarse
    slot, grey textures in the fine ones) the finer slots come from the
    next example j > i (cyclically) whose class is in that set, and only
    examples of the other classes are mixed: every hybrid is a coarse
    image of one group under the fine bands of the other.

Guidance takes a weight per band and slot W[s, k] (`guided_velocity`,
`GUIDANCE_MODES`); W = 1 everywhere is the plain conditional field.

A run without slots (slot_starts = ()) takes y [B] and computes exactly
what it did before slots existed; `parse` returns None for it.

Token (caption) slots (config.cond.slot_kinds, flow/token_slots.py): a
slot of kind "tokens" reads a caption through the text encoder
(models/text.py). A run with one takes labels y int32 [B, K, L]: a class
slot's class id at position 0 (zeros after it), a token slot's caption
tokens (0 = pad; all pad = the null caption). Every function here treats
both layouts alike through `null_of` and `_pick`; a run with class slots
only keeps y [B, K] and computes exactly what it did before.
"""
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax.flow import paths as paths_lib
from kflow_jax.flow import steering
from kflow_jax.flow import token_slots

VISIBILITIES = ("causal", "active", "all")
# name -> network evaluations per step for K slots.
GUIDANCE_MODES = {
    # v(null) + w (v(y) - v(null)), w = W[s, owner of s]: 2 evaluations.
    "active": lambda k: 2,
    # v(null) + sum_k W[s, k] (v(y_0..k) - v(y_0..k-1)): K + 1.
    "nested": lambda k: k + 1,
    # v(null) + sum_k W[s, k] (v(y_k alone) - v(null)): K + 1.
    "composable": lambda k: k + 1,
}
# fold_in streams of an example's key for the draws slots add; the key's
# own split (losses.draw_examples) is left as it was, so runs without
# slots keep their noise bit for bit.
_DROP_STREAM, _MIX_STREAM = 101, 102


class Slots(NamedTuple):
  """A checked config.cond (see `parse`)."""
  starts: tuple          # first band of each slot; starts[0] == 0
  visibility: str
  num_bands: int
  num_classes: int       # the null label of every slot
  slot_dropout: float    # P(only slot k null), each k
  drop_all: float        # P(every slot null) = config.label_dropout
  band_mix: float        # P(an example is a band-mixed hybrid)
  fine_classes: tuple = ()  # classes hybrids take their finer slots from
  # Token slots (flow/token_slots.parse; defaults: class slots only).
  kinds: tuple = ()      # per slot "class" or "tokens"; () = all class
  text: Any = None       # models.text.TextSpec of the token slots' encoder
  captions: str = ""     # the caption source (config.input.captions)
  canonical: tuple = ()  # per class: its caption's tokens (class -> slot)
  encoder_path: str = ""  # pretrained encoder directory ("" = trained here)
  freeze: bool = False   # keep the pretrained encoder as loaded

  @property
  def num_slots(self) -> int:
    return len(self.starts)

  @property
  def max_tokens(self) -> int:
    """L of the labels [B, K, L] of a run with token slots; 0 without."""
    return int(self.text.max_tokens) if "tokens" in self.kinds else 0

  def owner(self) -> np.ndarray:
    """int [S]: the slot that owns each band."""
    return np.searchsorted(np.asarray(self.starts), np.arange(self.num_bands),
                           side="right") - 1

  def table(self) -> np.ndarray:
    """bool [S, K]: the slots the network reads while band s flows."""
    owner = self.owner()[:, None]
    k = np.arange(self.num_slots)[None, :]
    if self.visibility == "causal":
      return k <= owner
    if self.visibility == "active":
      return k == owner
    return np.ones((self.num_bands, self.num_slots), bool)


def parse(cond, *, num_bands: int, num_classes: int, label_dropout: float,
          transform=None) -> Optional[Slots]:
  """config.cond checked against the run; None without slots (0 or 1
  entries in slot_starts: one label, as before slots existed)."""
  starts = tuple(int(s) for s in (cond.slot_starts or ()))
  if len(starts) <= 1:
    if float(cond.band_mix) or float(cond.slot_dropout):
      raise ValueError(
          "config.cond.band_mix and config.cond.slot_dropout train condition "
          "slots; set config.cond.slot_starts (e.g. (0, 1): slot 0 owns band "
          "0, slot 1 the bands from 1 on) or reset them to 0.")
    return None
  if not num_classes:
    raise ValueError(
        f"config.cond.slot_starts={starts} gives each group of bands its own "
        "class label, which needs a class-conditional run: set "
        "config.conditional=True (and a labelled data set).")
  if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or (
      starts[-1] >= num_bands):
    raise ValueError(
        f"config.cond.slot_starts={starts} must start at 0 and increase "
        f"strictly, each entry a band in 0..{num_bands - 1} (the path has "
        f"{num_bands} bands): slot k owns bands slot_starts[k] .. "
        "slot_starts[k+1] - 1, e.g. (0, 1).")
  visibility = str(cond.visibility)
  if visibility not in VISIBILITIES:
    raise ValueError(f"config.cond.visibility={visibility!r}; valid: "
                     f"{list(VISIBILITIES)}.")
  p_slot, p_all, p_mix = (float(cond.slot_dropout), float(label_dropout),
                          float(cond.band_mix))
  k = len(starts)
  if min(p_slot, p_all, p_mix) < 0 or p_all + k * p_slot > 1 or p_mix > 1:
    raise ValueError(
        f"config.label_dropout ({p_all}) + {k} x config.cond.slot_dropout "
        f"({p_slot}) are the probabilities of disjoint events and must sum "
        f"to at most 1, and config.cond.band_mix ({p_mix}) must lie in "
        "[0, 1].")
  if p_mix and transform is not None and not transform.orthonormal:
    raise ValueError(
        f"config.cond.band_mix makes hybrids T^-1(M T x_i + (1 - M) T x_j), "
        f"whose bands are those of x_i and x_j only when T is orthonormal; "
        f"{transform.name!r} is not. Use "
        f"{steering.ORTHONORMAL_ALTERNATIVES}, or band_mix=0.")
  fine = tuple(cond.mix_fine_classes or ())
  if fine and (not p_mix or not all(isinstance(c, int) and 0 <= c <
                                    num_classes for c in fine)
               or len(set(fine)) >= num_classes):
    raise ValueError(
        f"config.cond.mix_fine_classes={fine} names the classes band-mixed "
        "hybrids take their finer slots from: it needs config.cond.band_mix "
        f"> 0 and classes in 0..{num_classes - 1} that leave at least one "
        "class for the coarse slot (e.g. the texture photos of "
        "configs/patches.py:slots); or () for any neighbour.")
  return Slots(starts=starts, visibility=visibility, num_bands=int(num_bands),
               num_classes=int(num_classes), slot_dropout=p_slot,
               drop_all=p_all, band_mix=p_mix, fine_classes=fine)


def as_slots(slots: Slots, y: jax.Array) -> jax.Array:
  """Labels [B] (the same class for every slot) or [B, K] -> int32 [B, K];
  with token slots, class labels become [B, K, L] (a token slot given
  class c takes c's canonical caption, token_slots.from_classes) and
  [B, K, L] is taken as it is."""
  y = jnp.asarray(y).astype(jnp.int32)
  if slots.max_tokens and y.ndim == 3:
    return token_slots.check_shape(slots, y)
  if y.ndim == 1:
    y = jnp.broadcast_to(y[:, None], (y.shape[0], slots.num_slots))
  if y.ndim != 2 or y.shape[1] != slots.num_slots:
    want = f"[B, {slots.num_slots}]" + (
        f" or [B, {slots.num_slots}, {slots.max_tokens}]"
        if slots.max_tokens else "")
    raise ValueError(f"slot labels must be [B] or {want}, got shape "
                     f"{tuple(y.shape)}.")
  return token_slots.from_classes(slots, y) if slots.max_tokens else y


def batch_labels(slots: Slots, batch: dict) -> jax.Array:
  """A data batch's slot labels: each slot the image's class, and with
  token slots each token slot its caption (batch["caption"])."""
  y = as_slots(slots, batch["label"])
  if not slots.max_tokens:
    return y
  return token_slots.with_captions(slots, y, batch.get("caption"))


def null_of(slots: Slots) -> jax.Array:
  """The null labels of every slot, broadcastable against y: the null
  class num_classes; with token slots [K, L], a class slot's null class
  at position 0 and a token slot's empty caption."""
  if not slots.max_tokens:
    return jnp.int32(slots.num_classes)
  return token_slots.null_row(slots)


def _pick(mask: jax.Array, a: jax.Array, b) -> jax.Array:
  """where(mask [..., K], a, b) over labels [.., K] or [.., K, L]."""
  mask = jnp.asarray(mask)
  while mask.ndim < max(jnp.ndim(a), jnp.ndim(b)):
    mask = mask[..., None]
  return jnp.where(mask, a, b)


def null_labels(slots: Slots, y: jax.Array) -> jax.Array:
  """Negative labels (-1: "no label" in config.sample.slot_labels) and the
  labels of slots the network may not read -> the null label."""
  if not slots.max_tokens:
    return jnp.where(y < 0, slots.num_classes, y)
  return _pick(y[..., 0] < 0, null_of(slots), y)


def visible_labels(slots: Slots, path: paths_lib.Path, y: jax.Array,
                   t: jax.Array) -> jax.Array:
  """y [B, K] with the slots that band(t) may not read set to null."""
  see = jnp.asarray(slots.table())[paths_lib.active_band(path, t)]
  return _pick(see, null_labels(slots, as_slots(slots, y)), null_of(slots))


def network(slots: Slots, path: paths_lib.Path, apply: Callable) -> Callable:
  """apply(x, t, y [B, K]) seen through the visibility: (x, t, y) -> v with
  y [B] or [B, K]."""
  def fn(x, t, y, *args, **kwargs):
    return apply(x, t, visible_labels(slots, path, y, t), *args, **kwargs)
  return fn


def drop_events(slots: Slots, keys: jax.Array, y: jax.Array) -> jax.Array:
  """Training labels [B, K] after the disjoint dropout events, one uniform
  per example from its own key: u < drop_all -> every slot null; then
  slot k alone null for u in the k-th next interval of width slot_dropout."""
  y = as_slots(slots, y)
  u = jax.vmap(lambda k: jax.random.uniform(
      jax.random.fold_in(k, _DROP_STREAM)))(keys)
  lo = slots.drop_all + slots.slot_dropout * jnp.arange(slots.num_slots)
  alone = (u[:, None] >= lo[None]) & (
      u[:, None] < lo[None] + slots.slot_dropout)
  drop = alone | (u < slots.drop_all)[:, None]
  return _pick(drop, null_of(slots), y)


def band_mix(slots: Slots, path: paths_lib.Path, x1: jax.Array,
             y: jax.Array, keys: jax.Array):
  """(x1, y [B, K]): each example, with probability slots.band_mix, a
  hybrid of itself and its neighbour i + 1 (mod B) in the global batch
  (with slots.fine_classes: of an example of another class and the next
  example of a fine class, `_partners`).

  The crossover is a slot boundary b drawn uniformly from 1..K-1: the bands
  of slots 0..b-1 come from x_i and keep y_i, those of slots b.. come from
  x_{i+1} and take its label. Unmixed examples are returned bit for bit.
  Call it on the global batch (before sharding), so the pairs do not depend
  on how the batch is split over devices."""
  y = as_slots(slots, y)
  if not slots.band_mix:
    return x1, y

  def draw(key):
    r_mix, r_cut = jax.random.split(jax.random.fold_in(key, _MIX_STREAM))
    return (jax.random.uniform(r_mix) < slots.band_mix,
            jax.random.randint(r_cut, (), 1, slots.num_slots))
  mixed, cut = jax.vmap(draw)(keys)
  # The image's class: slot 0's label (a class slot holds it at token
  # position 0; mix_fine_classes is refused with token slots).
  partner, ok = _partners(slots, y[:, 0] if y.ndim == 2 else y[:, 0, 0])
  mixed = mixed & ok
  first_fine_band = jnp.asarray(slots.starts, jnp.int32)[cut]     # [B]
  tr = path.transform
  band = jnp.asarray(path.band)[None]                             # [1, ...]
  from_i = band < first_fine_band.reshape((-1,) + (1,) * (band.ndim - 1))
  c = jnp.where(from_i, tr.forward(x1), tr.forward(x1[partner]))
  hybrid = tr.inverse(c).astype(x1.dtype)
  x_out = jnp.where(mixed.reshape((-1,) + (1,) * (x1.ndim - 1)), hybrid, x1)
  fine = mixed[:, None] & (jnp.arange(slots.num_slots)[None] >= cut[:, None])
  return x_out, _pick(fine, y[partner], y)


def _partners(slots: Slots, own: jax.Array):
  """(partner [B], may mix [B]) of the examples with labels own [B]: the
  neighbour i + 1 (mod B), or with slots.fine_classes the first j after i
  (cyclically) whose class is fine, for examples not of a fine class (none
  when the batch holds no fine example)."""
  b = own.shape[0]
  i = jnp.arange(b)
  if not slots.fine_classes:
    return (i + 1) % b, jnp.ones((b,), bool)
  is_fine = jnp.isin(own, jnp.asarray(slots.fine_classes, jnp.int32))
  steps = jnp.where(is_fine[None, :], (i[None, :] - i[:, None] - 1) % b, b)
  return jnp.argmin(steps, axis=1), ~is_fine & (jnp.min(steps, axis=1) < b)


def guidance_matrix(slots: Slots, matrix=(), guidance=1.0,
                    guidance_bands: Sequence[int] = ()) -> np.ndarray:
  """W [S, K] float32: config.sample.guidance_matrix, or from guidance
  (a scale in every band, or only in guidance_bands) for every slot."""
  shape = (slots.num_bands, slots.num_slots)
  if matrix:
    w = np.asarray(matrix, np.float32)
    if w.shape != shape or not np.all(np.isfinite(w)):
      raise ValueError(
          f"config.sample.guidance_matrix must be {shape[0]} rows (bands) of "
          f"{shape[1]} finite weights (slots), got {np.asarray(matrix)}; "
          "e.g. ((1.0, 1.0), (1.0, 3.0)).")
    return w
  # 1 (plain conditional) outside guidance_bands when they are given.
  bands = np.arange(slots.num_bands)
  per_band = np.where(np.isin(bands, guidance_bands) | (not guidance_bands),
                      float(guidance), 1.0).astype(np.float32)
  return np.repeat(per_band[:, None], slots.num_slots, axis=1)


def guided_velocity(apply: Callable, path: paths_lib.Path, slots: Slots,
                    y: jax.Array, matrix: np.ndarray, mode: str = "active",
                    t_drop: Optional[float] = None) -> Callable:
  """(x, t) -> v: guidance per band and slot from the network apply(x, t,
  y [B, K]) (already seen through `network`'s visibility).

  matrix W [S, K] (`guidance_matrix`); mode in GUIDANCE_MODES. All ones:
  the conditional field, one evaluation. t_drop (class drop): from t_drop
  on every slot is null and W = 0. The evaluations of a step are one
  batched call."""
  if mode not in GUIDANCE_MODES:
    raise ValueError(f"config.sample.guidance_mode={mode!r}; valid: "
                     f"{list(GUIDANCE_MODES)}.")
  y = null_labels(slots, as_slots(slots, y))
  null = jnp.broadcast_to(null_of(slots), y.shape)
  w_all = jnp.asarray(matrix, jnp.float32)
  k = slots.num_slots

  def weights(t):
    w = w_all[paths_lib.active_band(path, t)]                    # [B, K]
    return w if t_drop is None else jnp.where((t < t_drop)[:, None], w, 0.0)

  if np.all(np.asarray(matrix) == 1.0):
    if t_drop is None:
      return lambda x, t: apply(x, t, y)
    return lambda x, t: apply(x, t, _pick((t < t_drop)[:, None], y, null))
  slot = jnp.arange(k)[None]
  if mode == "active":
    owner = jnp.asarray(slots.owner())
    conds = [y, null]
  elif mode == "nested":
    conds = [null] + [_pick(slot <= j, y, null) for j in range(k)]
  else:
    conds = [null] + [_pick(slot == j, y, null) for j in range(k)]
  n = len(conds)

  def velocity_fn(x, t):
    v = apply(jnp.concatenate([x] * n), jnp.concatenate([t] * n),
              jnp.concatenate(conds))
    vs = jnp.split(v, n)
    w = weights(t)
    shape = (-1,) + (1,) * (x.ndim - 1)
    if mode == "active":
      ws = w[jnp.arange(w.shape[0]), owner[paths_lib.active_band(path, t)]]
      return vs[1] + ws.reshape(shape) * (vs[0] - vs[1])
    out = vs[0]
    for j in range(k):
      base = vs[j] if mode == "nested" else vs[0]
      out = out + w[:, j].reshape(shape) * (vs[j + 1] - base)
    return out
  return velocity_fn


def sample_labels(num_slots: int, rows: Sequence, num_classes: int,
                  indices) -> jax.Array:
  """Labels [B, K] of sample indices: config.sample.slot_labels rows
  (sample i takes row i % R; -1 = null), or with none every slot takes the
  class i % num_classes (consistent samples)."""
  idx = jnp.asarray(indices).astype(jnp.int32)
  if not rows:
    y = idx % max(int(num_classes), 1)
    return jnp.broadcast_to(y[:, None], (y.shape[0], int(num_slots)))
  table = jnp.asarray(np.asarray(rows, np.int32))
  return table[idx % table.shape[0]]


def check_rows(rows, num_slots: int, num_classes: int) -> tuple:
  """config.sample.slot_labels checked: R rows of K labels in
  -1..num_classes - 1."""
  rows = tuple(tuple(int(v) for v in r) for r in (rows or ()))
  bad = [r for r in rows if len(r) != num_slots
         or not all(-1 <= v < num_classes for v in r)]
  if bad:
    raise ValueError(
        f"config.sample.slot_labels row {bad[0]} must hold {num_slots} "
        f"labels (one per slot), each a class in 0..{num_classes - 1} or -1 "
        "for none; e.g. ((3, 8), (3, 1)): rows of (coarse, fine) labels.")
  return rows
