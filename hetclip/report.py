"""The main job's report: a results table beside chance, training curves and reliability
diagrams, written as Markdown with PNG figures (docs/report/ in the repository)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hetclip.train.metrics import read_metrics

ZEROSHOT, RETRIEVAL = "zeroshot_heldout", "retrieval_test"
COLUMNS = (
    ("zero-shot top-1", f"{ZEROSHOT}/acc1"),
    ("zero-shot top-5", f"{ZEROSHOT}/acc5"),
    ("mean per-class recall", f"{ZEROSHOT}/mean_per_class_recall"),
    ("zero-shot ECE", f"{ZEROSHOT}/ece"),
    ("zero-shot NLL", f"{ZEROSHOT}/nll"),
    ("image->text R@1", f"{RETRIEVAL}/text_retrieval_recall@1"),
    ("image->text R@5", f"{RETRIEVAL}/text_retrieval_recall@5"),
    ("text->image R@1", f"{RETRIEVAL}/image_retrieval_recall@1"),
    ("text->image R@5", f"{RETRIEVAL}/image_retrieval_recall@5"),
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def chance_row(run_dir: Path) -> dict[str, float]:
    """What a model that ranks at random scores on the same evaluation sets."""
    zeroshot = np.load(run_dir / "evals" / f"{ZEROSHOT}.npz")
    retrieval = np.load(run_dir / "evals" / f"{RETRIEVAL}.npz")
    classes, pairs = len(zeroshot["class_names"]), len(retrieval["image"])
    row = {
        f"{ZEROSHOT}/acc1": 1 / classes,
        f"{ZEROSHOT}/acc5": min(5, classes) / classes,
        f"{ZEROSHOT}/mean_per_class_recall": 1 / classes,
    }
    row[f"{ZEROSHOT}/nll"] = float(np.log(classes))  # uniform prediction
    for k in (1, 5):
        for side in ("text", "image"):
            row[f"{RETRIEVAL}/{side}_retrieval_recall@{k}"] = k / pairs
    return row


def training_rate(run_dir: Path) -> float:
    """Median examples/s over the logged intervals (the first includes compilation; a
    resumed run's intervals are all of the same kind)."""
    rates = [
        m["examples_per_s"]
        for m in read_metrics(run_dir / "metrics.jsonl")
        if "examples_per_s" in m
    ]
    return float(np.median(rates[1:] if len(rates) > 1 else rates)) if rates else float("nan")


def _cell(value) -> str:
    return "" if value is None else f"{value:.3f}"


def write_report(
    runs: Sequence[tuple[str, Path]],
    out_dir: str | Path,
    *,
    command: str,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Writes out_dir/README.md (+ PNGs) for runs = [(display name, run directory)]."""
    from evals.plots import reliability_diagram, training_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    finals = {name: json.loads((d / "final_metrics.json").read_text()) for name, d in runs}
    chance = chance_row(runs[0][1])
    lines = [
        "# hetclip main job: report",
        "",
        f"Command: `{command}`  ",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{platform.machine()} ({platform.system()}), CPU only.",
        "",
        "Zero-shot classification is on the `heldout` split of the embedded image-text set: "
        "categories never seen in training, classified by prompt-ensembled class-name embeddings "
        "with each model's learned logit scale (so ECE and NLL are the model's own calibration). "
        "Retrieval is on the `test` split (one caption per image). Embeddings at evaluation are "
        "deterministic (no HET-XL noise).",
        "",
        "| model | " + " | ".join(c for c, _ in COLUMNS) + " | training examples/s |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " | ---: |",
    ]
    for name, run_dir in runs:
        final = finals[name]
        cells = " | ".join(_cell(final.get(key)) for _, key in COLUMNS)
        lines.append(f"| {name} | {cells} | {training_rate(run_dir):.0f} |")
    cells = " | ".join(_cell(chance.get(key)) for _, key in COLUMNS)
    lines.append(f"| chance | {cells} | |")
    curves = training_curves(
        {name: read_metrics(d / "metrics.jsonl") for name, d in runs},
        ["loss", "logit_scale", f"{ZEROSHOT}/acc1"],
        out_dir / "training_curves.png",
    )
    lines += [
        "",
        "## Training curves",
        "",
        f"![training curves]({curves.name})",
        "",
        "## Reliability of zero-shot predictions (held-out categories)",
        "",
    ]
    for name, run_dir in runs:
        saved = np.load(run_dir / "evals" / f"{ZEROSHOT}.npz")
        slug = run_dir.name
        figure = reliability_diagram(
            _softmax(saved["logits"].astype(np.float64)),
            saved["labels"],
            out_dir / f"reliability_{slug}.png",
            title=name,
        )
        lines.append(f"![{name}]({figure.name})")
    for heading, text in (notes or {}).items():
        lines += ["", f"## {heading}", "", text]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
