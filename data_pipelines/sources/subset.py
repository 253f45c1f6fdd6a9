"""A subset of another random-access source, with its classes renumbered: what
data_pipelines/prepare/class_budget.py writes, read as a source.

  {"kind": "subset", "of": {"kind": "prepared", "name": "fashion_mnist"}, "subset": "s.json"}

Record i is record indices[i] of `of`; a label that is the j-th of the subset's classes
becomes j (0..K-1), so a classifier of K classes trains on it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.prepare.class_budget import load_subset
from data_pipelines.sources.base import RandomAccessSource, make_source


class SubsetSource(RandomAccessSource):
    def __init__(self, of: Mapping[str, Any], subset: str | Path):
        super().__init__()
        self.inner = make_source(of)
        if not isinstance(self.inner, RandomAccessSource):
            raise ValueError(
                "A subset needs a random-access source (prepared, tfrecord, folder, manifest, "
                f"webdataset); got {type(self.inner).__name__}."
            )
        record = load_subset(subset)
        self.indices = np.asarray(record["indices"], np.int64)
        self.classes = np.asarray(record["classes"], np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(self.inner)):
            raise ValueError(
                f"Subset {subset} names records up to {self.indices.max()}, but the source has "
                f"{len(self.inner)}: it was written for another source."
            )
        self.skips = self.inner.skips  # skipped records are counted where they are read
        # old label -> new label (or -1): a dense table over the old labels.
        self.table = np.full(int(self.classes.max(initial=-1)) + 1, -1, np.int64)
        self.table[self.classes] = np.arange(len(self.classes))

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> dict[str, Any]:
        return self.inner.read(int(self.indices[index]))

    def signature(self) -> dict[str, Any]:
        return self.inner.signature()

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        example = dict(self.inner.parse(raw))
        label = tf.cast(example["label"], tf.int64)
        known = (label >= 0) & (label < len(self.table))
        new = tf.gather(tf.constant(self.table), tf.clip_by_value(label, 0, len(self.table) - 1))
        example["label"] = tf.where(known, new, tf.constant(-1, tf.int64))
        return example

    def describe(self) -> str:
        return f"SubsetSource({len(self.classes)} classes, {len(self)} of {self.inner.describe()})"
