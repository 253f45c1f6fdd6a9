"""The example dict every source produces, and the accounting of skipped records.

Every source yields examples with these keys (a source fills the ones it has):
  id:       scalar string, unique within the source
  image:    scalar string, the encoded image bytes (the `decode` op turns it into [H, W, 3] uint8)
  texts:    [N] strings, the captions of the image (N >= 1)
  label:    scalar int64 class index (supervised sets)
  source:   scalar string, the data source the example came from (e.g. "tuxpaint")
  category: scalar string, the source's own category of the example (e.g. "animals/birds")
  labels:   [K] bool multi-hot label set, only from sources configured for multi-label sets
"""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path

EXAMPLE_KEYS = ("id", "image", "texts", "label", "source", "category")


class SkipRecord(Exception):  # noqa: N818 - it is a signal, not an error to the user
    """Raised by a source's reader for a record that must be skipped; `reason` is a short key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Thread-safe counts of skipped records by reason, with a few examples of each.

    Readers run on tf.data's worker threads, hence the lock.
    """

    def __init__(self, max_examples_per_reason: int = 5):
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._examples: dict[str, list[str]] = collections.defaultdict(list)
        self._max_examples = max_examples_per_reason
        self._seen: set = set()

    def add(self, reason: str, where: str = "", key: object = None) -> None:
        """Counts one skipped record; a `key` seen before (the same record met again in a later
        epoch) is not counted twice."""
        with self._lock:
            if key is not None:
                if key in self._seen:
                    return
                self._seen.add(key)
            self._counts[reason] += 1
            if where and len(self._examples[reason]) < self._max_examples:
                self._examples[reason].append(where)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    @property
    def examples(self) -> dict[str, list[str]]:
        with self._lock:
            return {k: list(v) for k, v in sorted(self._examples.items())}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def summary(self) -> str:
        counts = self.counts
        if not counts:
            return "no records skipped"
        parts = ", ".join(f"{reason}: {n}" for reason, n in counts.items())
        return f"skipped {sum(counts.values())} records ({parts})"

    def to_dict(self) -> dict:
        return {"total": self.total, "by_reason": self.counts, "examples": self.examples}

    def write(self, path: str | Path) -> Path:
        """Writes the counts as JSON (next to the outputs they concern) and returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path
