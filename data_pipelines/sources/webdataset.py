"""WebDataset-style tar shards: the format most image-text collections already come in.

Files in a shard are grouped into samples by key: the member path up to the first '.' of its
base name ("d/0001.jpg", "d/0001.txt" and "d/0001.json" form sample "d/0001"). Recognised
extensions: an image (jpg, jpeg, png, webp, ...), `txt` / `caption` (one caption per line),
`json` (keys "caption" or "captions", optional "label", "category"), and `cls` (an integer label).
The tar headers are scanned once when the source opens; samples are then read by seeking, so
the source is random access. A shard whose headers break off mid-file keeps the samples before
the break and counts the rest as one `corrupt_shard`.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Sequence
from typing import Any

from data_pipelines.images import DEFAULT_MAX_PIXELS
from data_pipelines.records import SkipRecord
from data_pipelines.sources.base import RandomAccessSource, SharedDescriptors
from data_pipelines.sources.common import (
    IMAGE_EXTENSIONS,
    ImageChecks,
    clean_captions,
    example_signature,
    make_example,
)
from data_pipelines.sources.tfrecord import expand_files

REASON_CORRUPT_SHARD = "corrupt_shard"
REASON_NO_IMAGE = "sample_without_image"
REASON_SHORT_MEMBER = "truncated_member"
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expands webdataset's numeric ranges: "s-{00..02}.tar" -> s-00.tar, s-01.tar, s-02.tar."""
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first)
    out = []
    for number in range(int(first), int(last) + 1):
        out.extend(
            expand_braces(pattern[: match.start()] + f"{number:0{width}d}" + pattern[match.end() :])
        )
    return out


class WebDatasetSource(RandomAccessSource):
    def __init__(
        self,
        shards: str | Sequence[str],
        max_pixels: int = DEFAULT_MAX_PIXELS,
        full_decode: bool = True,
        require_caption: bool = True,
    ):
        super().__init__()
        patterns = [shards] if isinstance(shards, str) else list(shards)
        expanded = [p for pattern in patterns for p in expand_braces(pattern)]
        self.shards = expand_files(expanded)
        if not self.shards:
            raise FileNotFoundError(
                f"No tar shards match {shards!r}. Give a path, a glob, or a brace range such as "
                "'/data/shard-{00000..00099}.tar'."
            )
        # samples[i] = (shard number, key, {extension: (offset, size)})
        self.samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        for shard_number, path in enumerate(self.shards):
            self._index_shard(shard_number, path)
        self.check = ImageChecks(max_pixels, full_decode)
        self.require_caption = require_caption
        self._files = SharedDescriptors(self, self.shards)

    def _index_shard(self, shard_number: int, path: str) -> None:
        members: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    directory, base = os.path.split(member.name)
                    if "." not in base:
                        continue
                    stem, extension = base.split(".", 1)
                    key = os.path.join(directory, stem)
                    members.setdefault(key, {})[extension.lower()] = (
                        member.offset_data,
                        member.size,
                    )
        except (tarfile.TarError, OSError, EOFError) as e:
            self.skips.add(REASON_CORRUPT_SHARD, f"{path}: {e}")
        for key in members:  # insertion order is the tar's order: deterministic
            self.samples.append((shard_number, key, members[key]))

    def __len__(self) -> int:
        return len(self.samples)

    def _read_member(self, shard_number: int, offset: int, size: int) -> bytes:
        data = self._files.pread(shard_number, size, offset)
        if len(data) != size:
            raise SkipRecord(REASON_SHORT_MEMBER, f"{self.shards[shard_number]}@{offset}")
        return data

    def read(self, index: int) -> dict[str, Any]:
        shard_number, key, parts = self.samples[index]
        image_ext = next((e for e in parts if e in IMAGE_EXTENSIONS), None)
        if image_ext is None:
            raise SkipRecord(REASON_NO_IMAGE, f"{self.shards[shard_number]}:{key}")
        meta: dict[str, Any] = {}
        texts: list[str] = []
        if "json" in parts:
            try:
                meta = json.loads(self._read_member(shard_number, *parts["json"]))
            except (ValueError, UnicodeDecodeError):
                meta = {}
            if isinstance(meta.get("caption"), str):
                texts.append(meta["caption"])
            texts.extend(str(c) for c in meta.get("captions", []) if c is not None)
        for ext in ("txt", "caption"):
            if ext in parts:
                raw = self._read_member(shard_number, *parts[ext]).decode("utf-8", "replace")
                texts.extend(raw.splitlines())
        label = meta.get("label", -1)
        if "cls" in parts:
            label = int(self._read_member(shard_number, *parts["cls"]).decode().strip() or -1)
        where = f"{self.shards[shard_number]}:{key}.{image_ext}"
        image = self.check(self._read_member(shard_number, *parts[image_ext]), where=where)
        return make_example(
            id=key,
            image=image,
            texts=clean_captions(texts, required=self.require_caption),
            label=int(label),
            source=os.path.basename(self.shards[shard_number]).split(".")[0],
            category=str(meta.get("category", "")),
        )

    def signature(self) -> dict[str, Any]:
        return example_signature()

    def describe(self) -> str:
        return f"WebDatasetSource({len(self.shards)} shards, {len(self)} samples)"
