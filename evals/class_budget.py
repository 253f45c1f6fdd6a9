"""Choosing how many classes a supervised pre-training set should have, from a small grid.

Zhang et al. (NeurIPS 2023) find downstream error, at a fixed pre-training size N = K n (K
classes, n images each), convex in the class-to-sample ratio r = K / n, with an optimum r*
that in their theory does not depend on N: then K* = sqrt(r* N) and n* = sqrt(N / r*) for any
budget. That invariance is an assumption to check, not to rely on: under error = a K^-p +
b n^-q it holds only for p = q, and r* otherwise drifts as N^((q - p) / (p + q)). So:

1. per size N of the grid, fit error = c2 (ln r)^2 + c1 ln r + c0 (least squares; at least 3
   ratios) and take ln r* = -c1 / (2 c2); a fit that is not convex (c2 <= 0) or whose optimum
   lies outside the measured ratios falls back to the best measured point, and says so;
2. across sizes, fit ln r* = alpha + drift ln N; `drift` near 0 supports invariance;
3. for a target N, report (K*, n*) both from the mean r* (invariance) and from the drift fit.
Points are {"size": N, "classes": K, "error": e} (e: e.g. 1 - linear-probe accuracy averaged
over downstream sets and seeds, as in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np


def _checked(points: Iterable[Mapping]) -> list[dict]:
    rows = []
    for point in points:
        missing = {"size", "classes", "error"} - set(point)
        if missing:
            raise ValueError(
                f"A grid point needs size, classes and error; {dict(point)} lacks "
                f"{sorted(missing)}."
            )
        size, classes = float(point["size"]), float(point["classes"])
        if not 1 <= classes <= size:
            raise ValueError(f"A grid point needs 1 <= classes <= size; got {dict(point)}.")
        rows.append({"size": size, "classes": classes, "error": float(point["error"])})
    return rows


def ratio(size: float, classes: float) -> float:
    """r = K / n with n = N / K, i.e. K^2 / N."""
    return classes * classes / size


def optimal_ratio(points: Iterable[Mapping]) -> dict:
    """{"ratio": r*, "fitted": bool, "note": str, "coefficients": [c2, c1, c0]} for points of
    ONE size (step 1 of the module docstring)."""
    rows = _checked(points)
    log_r = np.log([ratio(p["size"], p["classes"]) for p in rows])
    errors = np.array([p["error"] for p in rows])
    best = float(np.exp(log_r[np.argmin(errors)]))
    if len(np.unique(log_r)) < 3:
        return {
            "ratio": best,
            "fitted": False,
            "note": "fewer than 3 ratios: best point",
            "coefficients": None,
        }
    c2, c1, c0 = np.polyfit(log_r, errors, 2)
    if c2 <= 0:
        return {
            "ratio": best,
            "fitted": False,
            "note": "not convex in ln r: best point",
            "coefficients": [float(c2), float(c1), float(c0)],
        }
    log_optimum = -c1 / (2 * c2)
    if not log_r.min() <= log_optimum <= log_r.max():
        return {
            "ratio": best,
            "fitted": False,
            "note": "fitted optimum outside the measured ratios: best point",
            "coefficients": [float(c2), float(c1), float(c0)],
        }
    return {
        "ratio": float(np.exp(log_optimum)),
        "fitted": True,
        "note": "quadratic fit",
        "coefficients": [float(c2), float(c1), float(c0)],
    }


def plan(points: Iterable[Mapping], target_size: float, max_classes: int | None = None) -> dict:
    """The class budget for `target_size` images (module docstring): per-size optima, the
    drift exponent of r* over N (None with one size), and (K*, n*) under invariance and under
    the drift fit, K capped at max_classes (the label space) when given."""
    rows = _checked(points)
    sizes = sorted({p["size"] for p in rows})
    per_size = {size: optimal_ratio([p for p in rows if p["size"] == size]) for size in sizes}
    log_sizes = np.log(sizes)
    log_ratios = np.log([per_size[s]["ratio"] for s in sizes])
    invariant = float(np.exp(log_ratios.mean()))
    drift, drifted = None, None
    if len(sizes) >= 2:
        drift, intercept = np.polyfit(log_sizes, log_ratios, 1)
        drift = float(drift)
        drifted = float(np.exp(intercept + drift * math.log(target_size)))

    def budget(r: float | None) -> dict | None:
        if r is None:
            return None
        classes = math.sqrt(r * target_size)
        capped = max_classes is not None and classes > max_classes
        classes = float(max_classes) if capped else classes
        return {
            "ratio": r,
            "classes": round(classes),
            "per_class": round(target_size / classes),
            "capped_by_label_space": capped,
        }

    return {
        "target_size": target_size,
        "per_size": {str(int(s)): per_size[s] for s in sizes},
        "drift": drift,
        "invariant": budget(invariant),
        "with_drift": budget(drifted),
    }
