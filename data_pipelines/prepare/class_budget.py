"""Nested class-budget subsets of a labelled set: K classes x n images per class.

Zhang et al. (NeurIPS 2023, "On the Trade-off of Intra-/Inter-class Diversity for Supervised
Pre-training") fix a pre-training budget N = K n and vary the number of classes K against the
images per class n; the best ratio r = K / n is then used to choose K for a larger N. Such a
study needs subsets that differ only in (K, n), so here every subset comes from one seeded
ranking of the classes and one seeded ranking of each class's images:

  subset(K, n) = the first n images (in image rank) of each of the first K classes (in class rank)

so subset(K1, n1) is inside subset(K2, n2) whenever K1 <= K2 and n1 <= n2: smaller budgets are
subsets of larger ones, and a result's differences come from (K, n) alone. Only classes with at
least `min_per_class` images are ranked (pass the largest n of the study), so the ranking does
not change with n. Labels of the chosen classes are renumbered 0..K-1 in class rank
(data_pipelines/sources/subset.py reads a subset file as a source).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT = "hetclip-class-subset-1"


def collect_labels(source, batch_size: int = 1024) -> np.ndarray:
    """labels [N] (int64) of a random-access source's records, in record order, read in one
    parallel pass (images are not decoded); a record that cannot be read gets -1 (never
    chosen) and is counted in source.skips."""
    from data_pipelines.input import InputPipeline
    from data_pipelines.progress import Progress

    pipeline = InputPipeline(
        source,
        "keep('label')",
        global_batch_size=batch_size,
        shuffle=False,
        process_index=0,
        process_count=1,
    )
    parts = []
    progress = Progress("subset: labels", total=len(source))
    for batch in pipeline.eval_batches():
        parts.append(np.where(batch["_mask"].astype(bool), batch["label"], -1))
        progress.update(min(len(batch["label"]), len(source) - progress.count))  # no padding
    progress.close()
    return np.concatenate(parts)[: len(source)].astype(np.int64)


def class_ranking(labels: np.ndarray, min_per_class: int, seed: int) -> np.ndarray:
    """The labels with at least `min_per_class` records (labels >= 0), in a seeded random
    order: [C_eligible]."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    eligible = classes[counts >= min_per_class]
    return np.random.default_rng([seed, 0]).permutation(eligible)


def nested_subset(
    labels: np.ndarray, num_classes: int, per_class: int, seed: int = 0, min_per_class: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(record indices [K * n] sorted, the K chosen labels in class rank [K]) of subset(K, n)
    (module docstring). min_per_class defaults to per_class; pass the study's largest n so that
    every budget of the study ranks the same classes."""
    labels = np.asarray(labels)
    min_per_class = max(min_per_class, per_class)
    if num_classes < 1 or per_class < 1:
        raise ValueError(f"A subset needs K >= 1 and n >= 1; got K={num_classes}, n={per_class}.")
    ranked = class_ranking(labels, min_per_class, seed)
    if num_classes > len(ranked):
        raise ValueError(
            f"Only {len(ranked)} classes have at least {min_per_class} images; asked for "
            f"K={num_classes}. Lower K, or the images per class."
        )
    chosen = ranked[:num_classes]
    indices = []
    for label in chosen:
        members = np.flatnonzero(labels == label)
        # One ranking per class, fixed by (seed, label): the same for every n.
        order = np.random.default_rng([seed, 1, int(label)]).permutation(len(members))
        indices.append(members[order[:per_class]])
    return np.sort(np.concatenate(indices)), chosen


def save_subset(path: str | Path, indices: np.ndarray, classes: np.ndarray, **about) -> Path:
    """Writes a subset file (JSON: record indices, chosen labels in their new order, and
    `about`, e.g. the source spec and (K, n, seed)), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": FORMAT,
        "indices": [int(i) for i in indices],
        "classes": [int(c) for c in classes],
        **about,
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record))
    partial.replace(path)
    return path


def load_subset(path: str | Path) -> dict:
    """A subset file's {"indices", "classes", ...}; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Subset file {path} not found; write one with `hetclip data subset`."
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"Subset file {path} is not JSON ({e}); rewrite it.") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a hetclip subset file (format {FORMAT!r}).")
    return record
