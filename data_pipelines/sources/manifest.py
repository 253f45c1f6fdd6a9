"""CSV or JSON-lines manifests of (image path, caption[s]) rows.

CSV: a header row with an `image` column (a path, relative to the manifest's folder unless
absolute) and one or more caption columns (`caption`, `caption_2`, ... ; any column whose name
starts with "caption"); optional `id`, `label`, `category` columns.
JSONL: one object per line with `image` and `caption` (string) or `captions` (list of strings),
and the same optional keys. Rows without any non-empty caption are skipped (counted) unless the
manifest carries labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from data_pipelines.images import DEFAULT_MAX_PIXELS
from data_pipelines.records import SkipCounter, SkipRecord
from data_pipelines.sources.base import RandomAccessSource
from data_pipelines.sources.common import (
    ImageChecks,
    clean_captions,
    example_signature,
    make_example,
    read_file,
)

REASON_BAD_ROW = "malformed_manifest_row"


def _rows(path: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or "image" not in row:
                        raise ValueError("no 'image' key")
                except ValueError as e:
                    skips.add(REASON_BAD_ROW, f"{path}:{line_number}: {e}")
                    continue
                captions = row.get("captions", [])
                if "caption" in row:
                    captions = [row["caption"], *captions]
                row["texts"] = [str(c) for c in captions if c is not None]
                rows.append(row)
        return rows
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "image" not in fields:
            raise ValueError(
                f"Manifest {path} has no 'image' column (columns: {fields}). The first row must "
                "be a header naming an 'image' column and 'caption' column(s)."
            )
        caption_columns = [c for c in fields if c.startswith("caption")]
        for row in reader:
            row["texts"] = [row[c] for c in caption_columns if row.get(c)]
            rows.append(row)
    return rows


class ManifestSource(RandomAccessSource):
    def __init__(
        self,
        path: str,
        image_root: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        full_decode: bool = True,
    ):
        super().__init__()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"Manifest {self.path} does not exist. Write a CSV (image,caption columns) or a "
                "JSONL file ({'image': ..., 'caption': ...} per line) there."
            )
        self.image_root = Path(image_root).expanduser() if image_root else self.path.parent
        self.rows = _rows(self.path, self.skips)
        self.has_labels = bool(self.rows) and all(
            str(r.get("label", "")).strip() != "" for r in self.rows
        )
        self.check = ImageChecks(max_pixels, full_decode)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        path = self.image_root / row["image"]
        try:
            texts = clean_captions(row["texts"], required=not self.has_labels)
        except SkipRecord as e:
            raise SkipRecord(e.reason, f"{self.path} row {index + 1}: {row['image']}") from None
        return make_example(
            id=str(row.get("id") or row["image"]),
            image=self.check(read_file(path), where=str(path)),
            texts=texts,
            label=int(row["label"]) if self.has_labels else -1,
            source=self.path.stem,
            category=str(row.get("category") or ""),
        )

    def signature(self) -> dict[str, Any]:
        return example_signature()

    def describe(self) -> str:
        return f"ManifestSource({self.path}: {len(self)} rows)"
