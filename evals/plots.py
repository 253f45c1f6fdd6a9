"""PNG figures for reports: reliability diagrams and training curves (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from evals.calibration import expected_calibration_error, reliability_bins


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(
    probs: np.ndarray, labels: np.ndarray, path: str | Path, *, title: str, num_bins: int = 15
) -> Path:
    """Accuracy vs confidence per equal-width bin (bars), the diagonal of perfect calibration,
    and the share of examples per bin; probs [N, K], labels [N]."""
    plt = _pyplot()
    bins = reliability_bins(probs, labels, num_bins)
    ece = expected_calibration_error(probs, labels, num_bins)
    edges = np.linspace(0, 1, num_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / num_bins
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4, 4.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    filled = bins.counts > 0
    top.bar(
        centers[filled],
        bins.accuracy[filled],
        width=width,
        edgecolor="black",
        color="#4c72b0",
        label="accuracy",
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"{title}\nECE {ece:.3f}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, bins.counts / max(bins.counts.sum(), 1), width=width, color="#999999")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("share")
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str],
    path: str | Path,
) -> Path:
    """One panel per metric key, one line per run; runs map a name to metrics.jsonl records."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    axes = np.atleast_1d(axes)
    for axis, key in zip(axes, keys, strict=True):
        for name, records in runs.items():
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, marker="o" if len(points) < 8 else None, label=name)
        axis.set_title(key, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(plt, fig, path)


def class_budget_contour(
    points: Iterable[Mapping], path: str | Path, planned: Mapping | None = None
) -> Path:
    """Downstream error over (N, K) on log axes: filled contours through the grid points
    (marked), and the lines K = sqrt(r* N) of `planned` (evals.class_budget.plan's output)."""
    rows = [{k: float(p[k]) for k in ("size", "classes", "error")} for p in points]
    plt = _pyplot()
    sizes = np.array([p["size"] for p in rows])
    classes = np.array([p["classes"] for p in rows])
    errors = np.array([p["error"] for p in rows])
    fig, axes = plt.subplots(figsize=(5, 4))
    if len(rows) >= 3 and len(np.unique(sizes)) >= 2 and len(np.unique(classes)) >= 2:
        filled = axes.tricontourf(np.log10(sizes), np.log10(classes), errors, levels=12)
        fig.colorbar(filled, ax=axes, label="downstream error")
    axes.scatter(np.log10(sizes), np.log10(classes), c="black", s=12, label="grid runs")
    if planned is not None:
        span = np.linspace(np.log10(sizes.min()), np.log10(planned["target_size"]), 20)
        for key, style in (("invariant", "--"), ("with_drift", ":")):
            if planned.get(key):
                r = planned[key]["ratio"]
                axes.plot(
                    span,
                    0.5 * (np.log10(r) + span),
                    style,
                    color="white" if key == "invariant" else "orange",
                    label=f"K = sqrt(r* N), {key}",
                )
    axes.set_xlabel("log10 N (pre-training images)")
    axes.set_ylabel("log10 K (classes)")
    axes.legend(fontsize=7, loc="upper left")
    return _save(plt, fig, path)
