"""The two kinds of source and the registry that builds them from config specs.

A RandomAccessSource reads record i in O(1) (our shards, folders, manifests, tar shards): the
input pipeline then addresses every example by its global position, which makes streams
deterministic given (seed, step), lets a resumed run skip ahead without reading, and gives each
process a disjoint slice. A StreamingSource (TFDS) only yields records in order.
"""

from __future__ import annotations

import abc
import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipelines.records import SkipCounter

SOURCE_KINDS: dict[str, str] = {
    # kind -> "module:factory"; modules are imported lazily so that e.g. TFDS loads only when used.
    "prepared": "data_pipelines.sources.tfrecord:prepared_source",
    "tfrecord": "data_pipelines.sources.tfrecord:TFRecordSource",
    "folder": "data_pipelines.sources.folders:ImageFolderSource",
    "manifest": "data_pipelines.sources.manifest:ManifestSource",
    "webdataset": "data_pipelines.sources.webdataset:WebDatasetSource",
    "tfds": "data_pipelines.sources.tfds_source:TfdsSource",
    "subset": "data_pipelines.sources.subset:SubsetSource",
}


class RandomAccessSource(abc.ABC):
    """A finite collection of raw examples addressed by index.

    `read(i)` returns a dict of Python/numpy values matching `signature()` or raises SkipRecord.
    `parse` runs inside tf.data afterwards (e.g. tf.train.Example parsing) and must return the
    example dict of `data_pipelines.records`.
    """

    def __init__(self) -> None:
        self.skips = SkipCounter()

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def read(self, index: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def signature(self) -> dict[str, Any]:
        """tf.TensorSpec per key of what `read` returns."""

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        return raw

    def describe(self) -> str:
        return f"{type(self).__name__}({len(self)} records)"


class StreamingSource(abc.ABC):
    """A source that can only be read in order: yields tf.data datasets of example dicts."""

    def __init__(self) -> None:
        self.skips = SkipCounter()

    @abc.abstractmethod
    def dataset(
        self,
        *,
        process_index: int,
        process_count: int,
        seed: int,
        shuffle: bool,
        drop_remainder: bool = True,
    ):
        """One pass over this process's disjoint share of the examples. Training drops the
        remainder so all shares are equal; an evaluation pass keeps every example."""

    def describe(self) -> str:
        return type(self).__name__


def register_source(kind: str, target: str) -> None:
    """Registers `module:factory` as the builder of sources of `kind`."""
    SOURCE_KINDS[kind] = target


def _factory(kind: str) -> Callable[..., Any]:
    if kind not in SOURCE_KINDS:
        near = difflib.get_close_matches(kind, SOURCE_KINDS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown data source kind {kind!r}.{hint} Known: {sorted(SOURCE_KINDS)}.")
    module_name, attr = SOURCE_KINDS[kind].split(":")
    return getattr(importlib.import_module(module_name), attr)


def make_source(spec: Mapping[str, Any]) -> RandomAccessSource | StreamingSource:
    """Builds a source from a mapping such as {"kind": "folder", "root": "/data/train"}."""
    spec = dict(spec)
    if "kind" not in spec:
        raise ValueError(
            f"Data source spec {spec} has no 'kind'; set it to one of {sorted(SOURCE_KINDS)}."
        )
    factory = _factory(spec.pop("kind"))
    try:
        return factory(**spec)
    except TypeError as e:
        raise ValueError(f"Bad arguments for data source {factory.__name__}: {e}") from None


class SharedDescriptors:
    """Read-only file descriptors opened on first use, one per file, shared by every reader
    thread (os.pread never moves a file offset, so sharing is thread-safe), closed when the
    owner is garbage-collected. Per-thread descriptors leaked one per tf.data thread per source
    and exhausted the process's descriptors over long jobs."""

    def __init__(self, owner: object, paths: Sequence[str]):
        import threading
        import weakref

        self.paths = list(paths)
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        weakref.finalize(owner, SharedDescriptors._close_all, self._fds)

    @staticmethod
    def _close_all(fds: dict[int, int]) -> None:
        import os

        for fd in fds.values():
            os.close(fd)
        fds.clear()

    def pread(self, file_number: int, length: int, offset: int) -> bytes:
        import os

        fd = self._fds.get(file_number)
        if fd is None:
            with self._lock:
                fd = self._fds.get(file_number)
                if fd is None:
                    fd = self._fds[file_number] = os.open(self.paths[file_number], os.O_RDONLY)
        return os.pread(fd, length, offset)
