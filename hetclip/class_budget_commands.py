"""`hetclip data subset`, `hetclip class-grid` and `hetclip plan-classes`: the class-budget
commands (data_pipelines/prepare/class_budget.py, hetclip/train/class_grid.py,
evals/class_budget.py), registered by hetclip/cli.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_data_subset(args: argparse.Namespace, overrides: list[str]) -> int:
    import numpy as np

    from data_pipelines.prepare import class_budget
    from data_pipelines.sources import make_source

    spec = _json_spec(args.data, "--data")
    labels_path = Path(args.labels) if args.labels else None
    if labels_path is not None and labels_path.is_file():
        labels = np.load(labels_path)
    else:
        source = make_source(spec)
        labels = class_budget.collect_labels(source)
        if source.skips.total:
            print(f"[subset] unreadable records left out: {source.skips.summary()}")
        if labels_path is not None:
            labels_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(labels_path, labels)
    indices, classes = class_budget.nested_subset(
        labels, args.classes, args.per_class, args.seed, args.min_per_class
    )
    about = dict(source=spec, num_classes=args.classes, per_class=args.per_class, seed=args.seed)
    path = class_budget.save_subset(args.out, indices, classes, **about)
    print(
        f"[subset] {len(indices)} records of {len(classes)} classes -> {path}; train on it with "
        f'--config.input.data=\'{{"kind": "subset", "of": {json.dumps(spec)}, "subset": '
        f'"{path}"}}\' and model.head.num_classes={len(classes)}'
    )
    return 0


def _json_spec(text: str, flag: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{flag} must be a JSON source spec such as "
            f'\'{{"kind": "prepared", "name": "fashion_mnist", "split": "train"}}\' ({e}).'
        ) from None


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, got {text!r}.") from None


def cmd_class_grid(args: argparse.Namespace, overrides: list[str]) -> int:
    from hetclip.config import apply_overrides, load_config
    from hetclip.train.class_grid import GRID_FILE, run_grid

    config = apply_overrides(load_config(args.config), overrides)
    probe = {
        "train_data": _json_spec(args.probe_train, "--probe-train"),
        "data": _json_spec(args.probe_test, "--probe-test"),
    }
    sizes, classes = _ints(args.sizes, "--sizes"), _ints(args.classes, "--classes")
    run_grid(config, sizes, classes, probe, args.workdir, epochs=args.epochs, seed=args.seed)
    grid = Path(args.workdir) / GRID_FILE
    print(f"[class-grid] points in {grid}; plan with: hetclip plan-classes --grid {grid} ...")
    return 0


def cmd_plan_classes(args: argparse.Namespace, overrides: list[str]) -> int:
    from evals.class_budget import plan
    from evals.plots import class_budget_contour

    grid_path = Path(args.grid)
    if not grid_path.is_file():
        raise FileNotFoundError(
            f"--grid {grid_path} not found (a JSON list of size/classes/error)."
        )
    points = json.loads(grid_path.read_text())
    planned = plan(points, args.target_size, args.max_classes)
    text = json.dumps(planned, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.plot:
        print(f"[plan] contour plot: {class_budget_contour(points, args.plot, planned)}")
    return 0


def add_commands(commands, data_commands) -> None:
    """Adds the subset command under `hetclip data` and class-grid / plan-classes."""
    from hetclip.cli import CONFIG_HELP  # cli imports this module first

    subset = data_commands.add_parser(
        "subset",
        help="write a nested K-classes x n-images subset of a labelled source",
        description="Chooses K classes and n images of each from one seeded ranking, so that "
        "smaller budgets are subsets of larger ones (data_pipelines/prepare/class_budget.py).",
    )
    subset.add_argument("--data", required=True, help="JSON source spec of the labelled set")
    subset.add_argument("--classes", type=int, required=True, help="K")
    subset.add_argument("--per-class", type=int, required=True, help="n")
    subset.add_argument(
        "--min-per-class",
        type=int,
        default=0,
        help="rank only classes with this many images (pass the study's largest n; default: n)",
    )
    subset.add_argument("--seed", type=int, default=0)
    subset.add_argument("--labels", help="labels .npy cache: read if present, else written")
    subset.add_argument("--out", required=True, help="the subset .json to write")
    subset.set_defaults(run=cmd_data_subset)

    grid = commands.add_parser(
        "class-grid",
        help="pre-train a classifier config on a grid of (size, classes) subsets, probe each",
        description="Trains the config on nested subsets of its data (N images, K classes), "
        "each followed by a ridge probe on a downstream set; writes WORKDIR/grid.json for "
        "plan-classes. Rerunning skips finished runs (hetclip/train/class_grid.py).",
    )
    grid.add_argument("--config", required=True, help=CONFIG_HELP)
    grid.add_argument("--sizes", required=True, help="pre-training sizes N, e.g. 2000,6000")
    grid.add_argument("--classes", required=True, help="class counts K, e.g. 2,4,8")
    grid.add_argument("--probe-train", required=True, help="JSON source spec: probe's training set")
    grid.add_argument("--probe-test", required=True, help="JSON source spec: probe's test set")
    grid.add_argument("--epochs", type=float, default=3.0, help="passes over each subset")
    grid.add_argument("--seed", type=int, default=0, help="the subsets' ranking seed")
    grid.add_argument("--workdir", required=True)
    grid.set_defaults(run=cmd_class_grid)

    planner = commands.add_parser(
        "plan-classes",
        help="choose the number of classes for a pre-training budget from a grid of runs",
        description="Fits the optimal class-to-sample ratio per pre-training size, checks how it "
        "moves with the size, and gives (K, n) for the target size (evals/class_budget.py).",
    )
    planner.add_argument("--grid", required=True, help="JSON list of {size, classes, error}")
    planner.add_argument("--target-size", type=float, required=True, help="N images to plan")
    planner.add_argument("--max-classes", type=int, help="classes the label space has")
    planner.add_argument("--out", help="write the plan as JSON here too")
    planner.add_argument("--plot", help="write a contour plot of error over (N, K) (PNG)")
    planner.set_defaults(run=cmd_plan_classes)
