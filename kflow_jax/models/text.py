"""Token (caption) condition slots: the text encoder and the slot embedder.

`TextEncoder`: tokens int32 [B, L] (0 = padding) -> [B, width], a small
pre-LayerNorm transformer over learned token and position embeddings,
pooled by a masked mean over the non-pad tokens ("mean") or read at a
learned CLS token ("cls"). Padding never enters a non-pad token's
attention; every token attends at least to itself, so an all-pad row has
no empty softmax (no NaN to leak through a masked gradient).

`SlotEmbedder`: the label embedder of a run with token slots
(flow/slots.py, config.cond.slot_kinds). Labels y int32 [B, K, L]: a class
slot reads its class id at position 0 (its own rows of one table, as
`layers.LabelEmbedder`), a token slot its caption through the one shared
encoder and its own projection. A null caption (all padding) takes the
slot's learned null embedding, so classifier-free guidance and slot
dropout work as they do for class slots. The conditioning vector is the
sum over slots (the slots a band may not read arrive null,
flow/slots.network).

`condition_embedder` picks LabelEmbedder (no token slot: the same module,
params and init as before token slots existed) or SlotEmbedder.

A pretrained encoder lives in a directory: `params.msgpack` (flax
serialization of the TextEncoder's params) and `encoder.json` (its
TextSpec); `save_encoder` / `load_encoder`.
"""
import json
import os
from typing import Any, NamedTuple, Optional

import flax.linen as nn
from flax import serialization
import jax
import jax.numpy as jnp

from kflow_jax.models import layers

POOLS = ("mean", "cls")
KINDS = ("class", "tokens")
PARAMS_FILE = "params.msgpack"
SPEC_FILE = "encoder.json"


class TextSpec(NamedTuple):
  """The text encoder's hyperparameters (hashable: a module attribute)."""
  vocab_size: int
  max_tokens: int
  width: int = 64
  depth: int = 2
  heads: int = 4
  pool: str = "mean"

  def check(self, what: str = "config.cond.text") -> "TextSpec":
    if min(self.vocab_size, self.max_tokens, self.width, self.depth,
           self.heads) < 1:
      raise ValueError(f"{what}: vocab_size, max_tokens, width, depth and "
                       f"heads must be >= 1, got {self}.")
    if self.width % self.heads:
      raise ValueError(f"{what}: width ({self.width}) must be divisible by "
                       f"heads ({self.heads}).")
    if self.pool not in POOLS:
      raise ValueError(f"{what}: pool={self.pool!r}; valid: {list(POOLS)}.")
    return self


class TextEncoder(nn.Module):
  """tokens int32 [B, L] (L <= max_tokens, 0 = pad) -> float32 [B, width]."""
  spec: TextSpec
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    s = self.spec
    b, length = tokens.shape
    if length > s.max_tokens:
      raise ValueError(f"the text encoder takes at most {s.max_tokens} "
                       f"tokens, got {length}.")
    init = nn.initializers.normal(0.02)
    table = self.param("token_embedding", nn.with_logical_partitioning(
        init, ("vocab", "embed")), (s.vocab_size, s.width), self.param_dtype)
    cls = int(s.pool == "cls")
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        init, ("length", "embed")), (s.max_tokens + cls, s.width),
                     self.param_dtype)
    valid = tokens > 0
    h = jnp.take(table, tokens.astype(jnp.int32), axis=0)
    if cls:
      cls_tok = self.param("cls", nn.with_logical_partitioning(
          init, ("embed",)), (s.width,), self.param_dtype)
      h = jnp.concatenate([jnp.broadcast_to(cls_tok, (b, 1, s.width)), h], 1)
      valid = jnp.concatenate([jnp.ones((b, 1), bool), valid], 1)
    h = (h + pos[None, :h.shape[1]]).astype(self.dtype)
    n = h.shape[1]
    # Keys: the non-pad tokens, and each token itself (see the module doc).
    mask = (valid[:, None, None, :] | jnp.eye(n, dtype=bool)[None, None])
    hd = s.width // s.heads
    for i in range(s.depth):
      x = layers.layer_norm(self.dtype, affine=True, name=f"ln_attn_{i}")(h)
      qkv = layers.dense(3 * s.width, ("embed", "qkv"), dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"qkv_{i}")(x)
      q, k, v = jnp.split(qkv.reshape(b, n, 3, s.heads, hd), 3, axis=2)
      a = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0],
                                       mask=mask)
      h = h + layers.dense(s.width, ("qkv", "embed"), dtype=self.dtype,
                           param_dtype=self.param_dtype,
                           name=f"proj_{i}")(a.reshape(b, n, s.width))
      x = layers.layer_norm(self.dtype, affine=True, name=f"ln_mlp_{i}")(h)
      h = h + layers.MlpBlock(4 * s.width, s.width, self.dtype,
                              self.param_dtype, name=f"mlp_{i}")(x)
    h = layers.layer_norm(self.dtype, affine=True, name="ln_out")(h)
    h = h.astype(jnp.float32)
    if cls:
      return h[:, 0]
    w = valid.astype(jnp.float32)[..., None]
    return jnp.sum(h * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)


class SlotEmbedder(nn.Module):
  """Labels y int32 [B, K, L] of mixed slot kinds -> [B, hidden] (see the
  module doc). y=None: every slot null."""
  num_classes: int
  hidden: int
  kinds: tuple
  text: TextSpec
  freeze_encoder: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, batch: int):
    k, length = len(self.kinds), self.text.max_tokens
    if y is None:
      y = jnp.zeros((batch, k, length), jnp.int32).at[:, :, 0].set(
          self._null_ids())
    y = y.astype(jnp.int32)
    classes = [i for i, kind in enumerate(self.kinds) if kind == "class"]
    tokens = [i for i, kind in enumerate(self.kinds) if kind == "tokens"]
    out = jnp.zeros((y.shape[0], self.hidden), jnp.float32)
    if classes:
      table = self.param("embedding", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), ("vocab", "embed")),
          ((self.num_classes + 1) * len(classes), self.hidden),
          self.param_dtype)
      rows = (y[:, jnp.asarray(classes), 0]
              + (self.num_classes + 1) * jnp.arange(len(classes)))
      out = out + jnp.sum(jnp.take(table, rows, axis=0), axis=1)
    if tokens:
      caps = y[:, jnp.asarray(tokens)]                        # [B, Kt, L]
      enc = TextEncoder(self.text, param_dtype=self.param_dtype,
                        name="encoder")(caps.reshape(-1, length))
      if self.freeze_encoder:
        enc = jax.lax.stop_gradient(enc)
      enc = enc.reshape(caps.shape[0], len(tokens), -1)
      proj = self.param("token_proj", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, "vocab", "embed")),
          (len(tokens), self.text.width, self.hidden), self.param_dtype)
      null = self.param("null_caption", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, "embed")),
          (len(tokens), self.hidden), self.param_dtype)
      e = jnp.einsum("bkw,kwh->bkh", enc, proj)
      is_null = jnp.all(caps == 0, axis=-1)[..., None]        # [B, Kt, 1]
      out = out + jnp.sum(jnp.where(is_null, null[None], e), axis=1)
    return out

  def _null_ids(self):
    return jnp.asarray([self.num_classes if kind == "class" else 0
                        for kind in self.kinds], jnp.int32)


def embedder(backbone: nn.Module, hidden: int, param_dtype):
  """The label embedder "y_embedder" of a backbone (its num_classes,
  num_slots, slot_kinds, text, freeze_encoder): LabelEmbedder without
  token slots (the module, params and init of before token slots existed),
  SlotEmbedder with them. Call it inside the backbone's compact method."""
  if not max_tokens(backbone):
    return layers.LabelEmbedder(backbone.num_classes, hidden, param_dtype,
                                num_slots=backbone.num_slots,
                                name="y_embedder")
  return SlotEmbedder(backbone.num_classes, hidden,
                      tuple(backbone.slot_kinds), backbone.text,
                      backbone.freeze_encoder, param_dtype, name="y_embedder")


def max_tokens(backbone: nn.Module) -> int:
  """L of a backbone's labels [B, K, L] with token slots; 0 without."""
  if "tokens" not in tuple(backbone.slot_kinds):
    return 0
  return int(backbone.text.max_tokens)


def check_slots(num_slots: int, slot_kinds: tuple,
                text: Optional[TextSpec]) -> None:
  """A backbone's __post_init__ check of its slot attributes."""
  kinds = tuple(slot_kinds)
  if not kinds:
    return
  bad = [k for k in kinds if k not in KINDS]
  if bad or len(kinds) != num_slots:
    raise ValueError(f"slot_kinds must be {num_slots} entries (one per "
                     f"slot) in {list(KINDS)}, got {kinds}.")
  if "tokens" in kinds:
    if not isinstance(text, TextSpec):
      raise ValueError("token slots need the text encoder's TextSpec "
                       f"(text=), got {text!r}.")
    text.check("text")


def label_shape(batch: int, num_slots: int, slot_kinds: tuple,
                text: Optional[TextSpec]) -> tuple:
  """The labels a backbone takes: [B], [B, K], or [B, K, L] with token
  slots."""
  if "tokens" in tuple(slot_kinds):
    return (batch, num_slots, text.max_tokens)
  return (batch,) if num_slots == 1 else (batch, num_slots)


def save_encoder(directory: str, params, spec: TextSpec) -> None:
  """Writes a TextEncoder's (unboxed) params and TextSpec to `directory`."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, PARAMS_FILE), "wb") as f:
    f.write(serialization.to_bytes(nn.meta.unbox(params)))
  with open(os.path.join(directory, SPEC_FILE), "w") as f:
    json.dump(spec._asdict(), f, indent=1)


def read_spec(directory: str) -> TextSpec:
  """The TextSpec of the pretrained encoder in `directory`."""
  return load_encoder(directory, params=False)[0]


def load_encoder(directory: str, params: bool = True):
  """(TextSpec, params as a nested dict of numpy arrays, or None with
  params=False) from `directory`."""
  files = [os.path.join(directory, f) for f in (SPEC_FILE, PARAMS_FILE)]
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise ValueError(
        f"config.cond.text.encoder_path={directory!r} lacks {missing[0]}: it "
        f"must be a directory holding {SPEC_FILE} and {PARAMS_FILE}, as "
        "written by kflow_jax.models.text.save_encoder.")
  with open(files[0]) as f:
    raw = json.load(f)
  fields = set(TextSpec._fields)
  if not isinstance(raw, dict) or set(raw) - fields or not {
      "vocab_size", "max_tokens"} <= set(raw):
    raise ValueError(f"{files[0]} must be a JSON object with keys "
                     f"{sorted(fields)}, got {raw!r}.")
  spec = TextSpec(**raw).check(files[0])
  if not params:
    return spec, None
  with open(files[1], "rb") as f:
    return spec, serialization.msgpack_restore(f.read())


def insert_encoder(params, pretrained, where: str = "the pretrained encoder"):
  """A backbone's (boxed) params with y_embedder/encoder replaced by the
  pretrained encoder's params (same tree and shapes, else a ValueError)."""
  mine = params["y_embedder"]["encoder"]
  leaves, tree = jax.tree_util.tree_flatten(
      mine, is_leaf=lambda l: isinstance(l, nn.Partitioned))
  try:
    loaded = tree.flatten_up_to(pretrained)
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(
        f"{where}: its params do not have the tree of the TextEncoder its "
        f"encoder.json describes ({e}); re-save it with "
        "models.text.save_encoder.") from None
  out = []
  for leaf, new in zip(leaves, loaded):
    old = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
    new = jnp.asarray(new, old.dtype)
    if new.shape != old.shape:
      raise ValueError(f"{where}: a param of shape {new.shape} where the "
                       f"encoder has {old.shape}; re-save it with "
                       "models.text.save_encoder.")
    out.append(leaf.replace_boxed(new) if isinstance(leaf, nn.Partitioned)
               else new)
  embedder = dict(params["y_embedder"],
                  encoder=jax.tree_util.tree_unflatten(tree, out))
  return dict(params, y_embedder=embedder)
