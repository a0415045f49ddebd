"""Our array_record data set format (image folders and encoded latents).

A data set is a directory:

    dataset_info.json   {"format": "kflow_array_record", "version": 1,
                         "kind": "images" | "latents",
                         "splits": {"train": {"num_examples": N,
                                              "files": [...]}, ...},
                         ...kind-specific metadata}
    train.array_record-00000-of-00004   ...

Each record is one example, a dict of numpy arrays / ints / bytes
serialised with flax's msgpack (numpy-aware, no pickle). array_record gives
O(1) random access, which grain needs for global shuffling and exact resume.
"""
import json
import os
from typing import Iterable, Optional

from array_record.python import array_record_module
from etils import epath
from flax import serialization
import grain

FORMAT = "kflow_array_record"
VERSION = 1
INFO_FILE = "dataset_info.json"
# group_size:1 keeps every record individually addressable: random reads
# cost one record, not a whole chunk (what tfds uses for data sources).
_WRITER_OPTIONS = "group_size:1"


class Writer:
  """Appends records (dicts) to one array_record file."""

  def __init__(self, path: str):
    self._writer = array_record_module.ArrayRecordWriter(
        os.fspath(path), _WRITER_OPTIONS)

  def write(self, record: dict):
    self._writer.write(serialization.msgpack_serialize(record))

  def close(self):
    self._writer.close()


def shard_name(split: str, i: int, n: int) -> str:
  return f"{split}.array_record-{i:05d}-of-{n:05d}"


def write_split(out_dir: str, split: str, records: Iterable[dict],
                num_examples: int, num_shards: int = 1,
                progress=None) -> dict:
  """Writes `num_examples` records into `num_shards` files; returns the entry.

  Records are spread contiguously (record i goes to shard
  i * num_shards // num_examples), so reading the shards in order gives the
  records back in order.
  """
  if num_examples < 1:
    raise ValueError(f"split {split!r} has no examples to write.")
  num_shards = max(1, min(int(num_shards), num_examples))
  files = [shard_name(split, i, num_shards) for i in range(num_shards)]
  writers = [Writer(os.path.join(out_dir, f)) for f in files]
  count = 0
  try:
    for record in records:
      if count >= num_examples:
        raise ValueError(
            f"split {split!r}: more records than num_examples={num_examples}.")
      shard = count * num_shards // num_examples
      writers[shard].write(record)
      count += 1
      if progress is not None:
        progress(count)
  finally:
    for w in writers:
      w.close()
  if count != num_examples:
    raise ValueError(
        f"split {split!r}: wrote {count} records, expected {num_examples}.")
  return {"num_examples": count, "files": files}


def write_info(out_dir: str, kind: str, splits: dict, **meta):
  info = {"format": FORMAT, "version": VERSION, "kind": kind,
          "splits": splits, **meta}
  with open(os.path.join(out_dir, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
  return info


def read_info(path: str, kind: Optional[str] = None,
              name: str = "folder") -> dict:
  """dataset_info.json of a data set directory, checked."""
  if not path:
    raise ValueError(
        f"config.input.name={name!r} needs config.input.path, the directory "
        "written by `python -m kflow_jax.tools.build_dataset` (images) or "
        "`python -m kflow_jax.tools.encode_latents` (latents).")
  info_path = epath.Path(path) / INFO_FILE
  if not info_path.exists():
    tool = "encode_latents" if kind == "latents" else "build_dataset"
    raise ValueError(
        f"data set {name!r}: no {info_path} (config.input.path={path!r}). "
        f"Build it first with `python -m kflow_jax.tools.{tool} ... "
        f"--out={path}`.")
  info = json.loads(info_path.read_text())
  if info.get("format") != FORMAT:
    raise ValueError(f"{info_path} is not a {FORMAT} data set.")
  if kind is not None and info.get("kind") != kind:
    raise ValueError(
        f"{path} holds a {info.get('kind')!r} data set, but "
        f"config.input.name={name!r} reads {kind!r}; use name="
        f"{'latents' if info.get('kind') == 'latents' else 'folder'!r}.")
  return info


def split_entry(info: dict, split: str, path: str) -> dict:
  if split not in info["splits"]:
    raise ValueError(
        f"data set at {path} has no split {split!r}; splits: "
        f"{sorted(info['splits'])}.")
  return info["splits"][split]


class RecordSource:
  """Random access over one split: record i -> dict (msgpack-decoded).

  Picklable (grain's ArrayRecordDataSource is), for grain worker processes.
  """

  def __init__(self, path: str, files):
    self._paths = [os.fspath(epath.Path(path) / f) for f in files]
    self._source = grain.sources.ArrayRecordDataSource(self._paths)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    return serialization.msgpack_restore(self._source[index])

  def __repr__(self) -> str:
    return f"RecordSource({self._paths[0]}..., n={len(self)})"


def open_split(path: str, info: dict, split: str) -> RecordSource:
  entry = split_entry(info, split, path)
  return RecordSource(path, entry["files"])
