"""Deterministic splits, parallel image normalisation and atomic writing of a prepared data set."""

from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from data_pipelines.progress import Progress
from data_pipelines.records import SkipCounter, SkipRecord
from data_pipelines.sources.tfrecord import ShardWriter, example_to_bytes

PREPARE_FORMAT_VERSION = 1


def unit_hash(key: str) -> float:
    """A stable number in [0, 1) from a string: the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_by_hash(key: str, fractions: Sequence[tuple[str, float]]) -> str:
    """Assigns `key` to a split; fractions e.g. [("train", .8), ("validation", .2)]."""
    value, edge = unit_hash(key), 0.0
    for name, fraction in fractions:
        edge += fraction
        if value < edge:
            return name
    return fractions[-1][0]


def _load_one(job: tuple[Callable[[Any], bytes], Any]) -> tuple[bytes | None, str, str]:
    loader, argument = job
    try:
        return loader(argument), "", ""
    except SkipRecord as e:
        return None, e.reason, e.detail


def load_images(
    items: Sequence[Mapping[str, Any]],
    loader: Callable[[Any], bytes],
    skips: SkipCounter,
    label: str,
    processes: int | None = None,
) -> list[dict[str, Any]]:
    """Runs `loader(item["load"])` for every item in parallel processes (order kept).

    Items whose loader raises SkipRecord are counted in `skips` and left out; the rest come back
    as example dicts with the image bytes under "image".
    """
    processes = processes or os.cpu_count() or 1
    progress = Progress(label, total=len(items))
    out: list[dict[str, Any]] = []
    jobs = [(loader, item["load"]) for item in items]
    # spawn, not fork: forking a process that runs JAX or TF threads can deadlock the child.
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = pool.imap(_load_one, jobs, chunksize=8)
        for item, (image, reason, detail) in zip(items, results, strict=True):
            progress.update()
            if image is None:
                skips.add(reason, f"{item['id']}: {detail}")
                continue
            example = {k: v for k, v in item.items() if k != "load"}
            example["image"] = image
            out.append(example)
    progress.close(skips.summary())
    return out


def write_prepared(
    directory: Path,
    examples_by_split: Mapping[str, Iterable[Mapping[str, Any]]],
    manifest: dict[str, Any],
    skips: SkipCounter,
    records_per_shard: int = 2048,
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Writes shards, skip counts and manifest.json into `directory`, atomically.

    Everything goes to a temporary sibling folder first; only a complete data set replaces the
    old one, so an interrupted run never destroys what was prepared before.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    splits: dict[str, Any] = {}
    for split, examples in examples_by_split.items():
        writer = ShardWriter(tmp, split, records_per_shard)
        by_source: Counter[str] = Counter()
        for example in examples:
            writer.write(example_to_bytes(example))
            by_source[example.get("source", "")] += 1
        files = writer.close()
        splits[split] = {
            "count": writer.count,
            "by_source": dict(sorted(by_source.items())),
            "files": [f.name for f in files],
        }
    for name, path in (extra_files or {}).items():
        shutil.copy2(path, tmp / name)
    skips.write(tmp / "skipped_records.json")
    manifest = {
        **manifest,
        "format_version": PREPARE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "splits": splits,
        "skipped": skips.to_dict(),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    backup = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        directory.rename(backup)
    tmp.rename(directory)
    shutil.rmtree(backup, ignore_errors=True)
    return directory
