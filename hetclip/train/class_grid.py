"""A class-budget grid: one supervised config pre-trained on nested subsets of sizes N with K
classes each (n = N / K images per class), each scored by a linear probe on a downstream set.

  hetclip class-grid --config fashion_mnist.py:head=det --sizes 2000,6000 --classes 2,4,6,8,10 \
      --probe-train '{"kind": "prepared", "name": "fashion_mnist", "split": "validation"}' \
      --probe-test '{"kind": "prepared", "name": "fashion_mnist", "split": "test"}' \
      --epochs 3 --workdir runs/class_grid

The subsets come from one ranking (data_pipelines/prepare/class_budget.py), ranked over the
classes that have the grid's largest n, so every run of the grid draws from the same classes
and images; a cell's n is N // K, so its K n images may fall short of N by less than K. Each
run trains `epochs` passes over its subset (the same number of examples seen per image at
every grid point, as in Zhang et al. 2023) and ends with a ridge probe on its frozen
pre-logits (classifier_evals.feature_probe). The points, {"size", "classes", "per_class",
"error" = 1 - probe accuracy, "lp_acc1"}, go to WORKDIR/grid.json as each run finishes;
rerunning skips finished runs. `hetclip plan-classes --grid WORKDIR/grid.json` plans
from them (evals/class_budget.py).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

GRID_FILE = "grid.json"


def grid_points(sizes: Sequence[int], classes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(N, K, n) per grid cell, n = N // K; cells where n < 1 are left out."""
    return [(size, k, size // k) for size in sizes for k in classes if size // k >= 1]


def _labels(spec: Mapping[str, Any], cache: Path) -> np.ndarray:
    from data_pipelines.prepare.class_budget import collect_labels
    from data_pipelines.sources import make_source

    if cache.is_file():
        return np.load(cache)
    labels = collect_labels(make_source(dict(spec)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, labels)
    return labels


def run_config(
    config, subset_path: Path, num_classes: int, examples: int, epochs: float, probe: Mapping
):
    """The grid run's config: `config` on the subset, K classes, `epochs` passes over its
    `examples`, warm-up a tenth of the steps, and the probe as its only eval, at the end."""
    run = copy.deepcopy(config)
    source = config.input.data
    source = source.to_dict() if hasattr(source, "to_dict") else dict(source)
    run.input.data = {"kind": "subset", "of": source, "subset": str(subset_path)}
    run.model.head.num_classes = num_classes
    steps = max(1, math.ceil(epochs * examples / int(config.input.batch_size)))
    run.total_steps = steps
    run.schedule.warmup_steps = max(1, steps // 10)
    run.eval_every = steps
    run.evals = {"probe": {"kind": "feature_probe", **dict(probe)}}
    return run


def _final_probe(workdir: Path) -> float | None:
    """The probe accuracy a finished run logged last (None while unfinished)."""
    from hetclip.train.metrics import read_metrics

    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return None
    values = [m["probe/lp_acc1"] for m in read_metrics(path) if "probe/lp_acc1" in m]
    return values[-1] if values else None


def run_grid(
    config,
    sizes: Sequence[int],
    classes: Sequence[int],
    probe: Mapping[str, Any],
    workdir: str | Path,
    *,
    epochs: float = 3.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Trains and probes every grid cell not finished yet; returns (and writes) the points."""
    from data_pipelines.prepare.class_budget import nested_subset, save_subset
    from hetclip.train.evaluators import evaluator_from_config
    from hetclip.train.loop import train

    if config.model.get("kind") != "classifier":
        raise ValueError("class-grid pre-trains supervised classifiers (model.kind='classifier').")
    missing = {"train_data", "data"} - set(probe)
    if missing:
        raise ValueError(f"class-grid's probe needs source specs for {sorted(missing)}.")
    workdir = Path(workdir)
    cells = grid_points(sizes, classes)
    if not cells:
        raise ValueError(f"No grid cell has n >= 1 image per class: sizes {sizes}, K {classes}.")
    labels = _labels(config.input.data, workdir / "labels.npy")
    largest_n = max(n for _, _, n in cells)
    points = []
    for number, (size, k, n) in enumerate(cells, 1):
        name = f"N{size}_K{k}"
        run_dir = workdir / name
        accuracy = _final_probe(run_dir)
        if accuracy is None:
            indices, chosen = nested_subset(labels, k, n, seed, min_per_class=largest_n)
            subset = save_subset(workdir / "subsets" / f"{name}.json", indices, chosen, seed=seed)
            run = run_config(config, subset, k, len(indices), epochs, probe)
            log(f"[class-grid] {number}/{len(cells)} {name}: {run.total_steps} steps")
            train(run, run_dir, evaluate=evaluator_from_config(run, run_dir))
            accuracy = _final_probe(run_dir)
        # "size" is the grid's N (what the planner groups by); K n may fall short of it by < K.
        points.append(
            {"size": size, "classes": k, "per_class": n, "lp_acc1": accuracy, "error": 1 - accuracy}
        )
        log(f"[class-grid] {name}: probe accuracy {accuracy:.4f}")
        partial = workdir / (GRID_FILE + ".partial")
        partial.write_text(json.dumps(points, indent=2))
        partial.replace(workdir / GRID_FILE)
    return points
