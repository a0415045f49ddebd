"""Reads a PyTorch state dict (`torch.save` file) into numpy, without torch.

Evaluation weights such as pytorch-fid's Inception are only published as
`.pth` files; torch is a multi-GB dependency we do not want at run time, so
this is the small part of `torch.load` a plain state dict needs:

  * the zip format (torch >= 1.6): `<archive>/data.pkl` plus one raw
    little-endian file per storage under `<archive>/data/<key>`;
  * the legacy format (torch < 1.6, `_use_new_zipfile_serialization=False`):
    magic number, protocol version and sys-info pickles, the object pickle,
    the list of storage keys, then per storage an int64 element count and
    its raw bytes.

Unpickling is restricted to an allow-list (OrderedDict, the tensor and
parameter rebuild functions, the typed storage classes), so a file cannot
run code; anything else is refused with the name of the class it asked for.
"""
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Dict

import numpy as np

# torch's storage class names -> numpy dtypes (the ones a float checkpoint
# can hold; bfloat16 has no numpy dtype and is refused by name).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
# pickle.load(f) of the first object of a legacy file.
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class _StorageType:
  """Stands in for torch.FloatStorage & co.: only its dtype matters."""

  def __init__(self, name):
    if name not in _STORAGE_DTYPES:
      raise pickle.UnpicklingError(
          f"storage type torch.{name} is not supported (only "
          f"{sorted(_STORAGE_DTYPES)}); save the weights as float32.")
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks, metadata  # irrelevant for numpy
  flat = storage[storage_offset:]
  if not size:
    return flat[:1].reshape(())
  extent = 1 + sum((n - 1) * s for n, s in zip(size, stride))
  if extent > flat.size:
    raise pickle.UnpicklingError(
        f"tensor of size {tuple(size)} stride {tuple(stride)} overruns its "
        f"storage ({flat.size} elements after offset); the file is corrupt.")
  # A view, not a copy: legacy files fill the storage after unpickling.
  # load_state_dict copies every tensor out at the end.
  return np.lib.stride_tricks.as_strided(
      flat, shape=tuple(size),
      strides=tuple(s * flat.itemsize for s in stride), writeable=False)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Allow-listed unpickler; storages come from `load_storage(key, dtype)`."""

  def __init__(self, f, load_storage):
    super().__init__(f)
    self._load_storage = load_storage
    self.storages = {}

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name.endswith("Storage"):
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f"refusing to unpickle {module}.{name}: only plain state dicts of "
        "tensors can be read without torch. Save `model.state_dict()`, not "
        "the model object.")

  def persistent_load(self, pid):
    # zip:    ('storage', storage_type, key, location, numel)
    # legacy: ('storage', storage_type, key, location, numel, view_metadata)
    if not isinstance(pid, tuple) or not pid or pid[0] not in (
        "storage", b"storage"):
      raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    view = pid[5] if len(pid) > 5 else None
    if view is not None:
      raise pickle.UnpicklingError(
          "storage views (files written by torch < 0.4) are not supported; "
          "re-save the state dict with a current torch.")
    if key not in self.storages:
      self.storages[key] = self._load_storage(key, storage_type.dtype, numel)
    return self.storages[key]


def _check_state_dict(obj, path):
  if not isinstance(obj, dict):
    raise ValueError(
        f"{path} holds a {type(obj).__name__}, not a state dict "
        "(name -> tensor).")
  bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
  if bad:
    raise ValueError(f"{path}: entries {bad[:5]} are not tensors; pass a "
                     "plain state dict.")
  return {k: np.array(v, order="C") for k, v in obj.items()}


def _load_zip(path) -> dict:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise ValueError(
          f"{path} is a zip file but not a torch.save archive (expected one "
          f"'<name>/data.pkl', found {pkl or 'none'}).")
    prefix = pkl[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = zf.read(prefix + "byteorder").decode().strip()

    def load_storage(key, dtype, numel):
      raw = zf.read(f"{prefix}data/{key}")
      arr = np.frombuffer(raw, dtype.newbyteorder(
          "<" if byteorder == "little" else ">"))
      if arr.size < numel:
        raise ValueError(f"{path}: storage {key} holds {arr.size} elements, "
                         f"the pickle expects {numel}; the file is truncated.")
      return arr[:numel].astype(dtype, copy=False)

    with zf.open(pkl[0]) as f:
      return _Unpickler(io.BytesIO(f.read()), load_storage).load()


def _load_legacy(path) -> dict:
  with open(path, "rb") as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise ValueError(f"{path} is neither a zip nor a legacy torch.save "
                       "file (bad magic number).")
    if pickle.load(f) != _LEGACY_PROTOCOL:
      raise ValueError(f"{path}: unsupported legacy torch protocol version.")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
      raise ValueError(f"{path} was saved on a big-endian machine.")
    # The storage bytes follow the object pickle: allocate each storage
    # while unpickling (tensors are views of it) and fill it afterwards.
    storages = {}

    def load_storage(key, dtype, numel):
      storages[key] = np.empty(numel, dtype)
      return storages[key]

    obj = _Unpickler(f, load_storage).load()
    for key in pickle.load(f):
      arr = storages[str(key)]
      (count,) = struct.unpack("<q", f.read(8))
      raw = f.read(count * arr.itemsize)
      if count != arr.size or len(raw) != arr.nbytes:
        raise ValueError(f"{path}: storage {key} is truncated or does not "
                         "match its pickle; the file is corrupt.")
      arr[:] = np.frombuffer(raw, arr.dtype)
  return obj


def load_state_dict(path) -> Dict[str, np.ndarray]:
  """`torch.load(path)` of a state dict, as {name: numpy array}, no torch."""
  path = str(path)
  try:
    if zipfile.is_zipfile(path):
      return _check_state_dict(_load_zip(path), path)
    with open(path, "rb") as f:
      head = f.read(2)
    if head[:1] != b"\x80":  # every torch.save pickle starts with PROTO
      raise ValueError(f"{path} is not a torch.save file (neither a zip "
                       "archive nor a pickle).")
    return _check_state_dict(_load_legacy(path), path)
  except (pickle.UnpicklingError, EOFError, KeyError) as e:
    raise ValueError(f"cannot read {path} as a torch state dict: {e}") from e


# ---------------------------------------------------------------------------
# Writing: the zip format torch.load reads, for test fixtures (e.g. seeded
# random Inception weights standing in for pytorch-fid's file) without torch.

_STORAGE_NAMES = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items()}


def _pickle_state_dict(names_shapes_dtypes) -> bytes:
  """Protocol-2 opcodes of OrderedDict{name: _rebuild_tensor_v2(storage
  i, 0, shape, contiguous strides, False, OrderedDict())}, storages as
  persistent ids ('storage', torch.<T>Storage, 'i', 'cpu', numel).

  Written by hand because pickle.Pickler must import torch to name its
  classes."""
  out = io.BytesIO()
  w = out.write

  def text(s):  # SHORT_BINUNICODE / BINUNICODE
    b = s.encode()
    w(b"\x8c" + bytes([len(b)]) + b if len(b) < 256
      else b"X" + struct.pack("<I", len(b)) + b)

  def integer(n):  # BININT
    w(b"J" + struct.pack("<i", int(n)))

  def int_tuple(values):
    w(b"(")
    for v in values:
      integer(v)
    w(b"t")

  w(b"\x80\x02")                                   # PROTO 2
  w(b"ccollections\nOrderedDict\n)R")              # OrderedDict()
  w(b"(")                                          # MARK for SETITEMS
  for i, (name, shape, dtype) in enumerate(names_shapes_dtypes):
    text(name)
    w(b"ctorch._utils\n_rebuild_tensor_v2\n")
    w(b"(")                                        # args MARK
    w(b"(")                                        # persistent id MARK
    text("storage")
    w(f"ctorch\n{_STORAGE_NAMES[np.dtype(dtype)]}\n".encode())
    text(str(i))
    text("cpu")
    integer(int(np.prod(shape, dtype=np.int64)))
    w(b"tQ")                                       # TUPLE, BINPERSID
    integer(0)
    int_tuple(shape)
    strides = [int(np.prod(shape[d + 1:], dtype=np.int64))
               for d in range(len(shape))]
    int_tuple(strides)
    w(b"\x89")                                     # NEWFALSE
    w(b"ccollections\nOrderedDict\n)R")
    w(b"tR")                                       # TUPLE, REDUCE
  w(b"u.")                                         # SETITEMS, STOP
  return out.getvalue()


def save_state_dict(path, state_dict: Dict[str, np.ndarray]) -> str:
  """Writes {name: array} as a torch.save zip archive (torch >= 1.6
  layout: archive/data.pkl, archive/data/<i>, archive/byteorder)."""
  path = str(path)
  arrays = [(k, np.asarray(v, order="C")) for k, v in state_dict.items()]
  for k, v in arrays:
    if v.dtype not in _STORAGE_NAMES:
      raise ValueError(f"tensor {k!r} has dtype {v.dtype}; torch storages "
                       f"hold {sorted(str(d) for d in _STORAGE_NAMES)}.")
  pkl = _pickle_state_dict([(k, v.shape, v.dtype) for k, v in arrays])
  tmp = path + ".tmp"
  with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr("archive/data.pkl", pkl)
    zf.writestr("archive/byteorder", "little")
    for i, (_, v) in enumerate(arrays):
      zf.writestr(f"archive/data/{i}", v.astype(v.dtype.newbyteorder("<"),
                                                copy=False).tobytes())
  os.replace(tmp, path)
  return path
