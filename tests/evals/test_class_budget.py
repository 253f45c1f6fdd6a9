"""The class-budget planner on error surfaces whose optimum is known in closed form."""

import math

import numpy as np
import pytest

from evals.class_budget import optimal_ratio, plan, ratio
from evals.plots import class_budget_contour


def _grid(error, sizes, optimum, spread=2.0, count=9):
    """Points around each size's optimum ratio, log-spaced over e^-spread..e^spread."""
    points = []
    for size in sizes:
        for factor in np.exp(np.linspace(-spread, spread, count)):
            classes = math.sqrt(optimum(size) * factor * size)
            points.append({"size": size, "classes": classes, "error": error(size, classes)})
    return points


def test_convex_surface_with_an_invariant_optimum_is_recovered_exactly():
    r0 = 0.05

    def error(size, classes):  # quadratic in ln r, same optimum at every N
        return 0.2 + 0.03 * (math.log(ratio(size, classes)) - math.log(r0)) ** 2 + 1 / size

    points = _grid(error, [1e4, 1e5], lambda n: r0)
    planned = plan(points, 1e7, max_classes=21_843)
    assert planned["drift"] == pytest.approx(0.0, abs=1e-6)
    assert planned["invariant"]["ratio"] == pytest.approx(r0, rel=1e-6)
    assert planned["invariant"]["classes"] == round(math.sqrt(r0 * 1e7))
    assert planned["invariant"]["per_class"] == round(1e7 / math.sqrt(r0 * 1e7))
    assert all(fit["fitted"] for fit in planned["per_size"].values())


def test_power_law_surface_reports_the_drift_of_the_optimum():
    # error = a K^-p + b n^-q: r* ~ N^((q - p) / (p + q)) (module docstring), here -0.25.
    a, b, p, q = 5.0, 5.0, 0.5, 0.3

    def error(size, classes):
        return a * classes**-p + b * (size / classes) ** -q

    def optimum(size):
        return (p * a / (q * b)) ** (2 / (p + q)) * size ** ((q - p) / (p + q))

    planned = plan(_grid(error, [1e4, 1e5, 1e6], optimum), 1e8)
    assert planned["drift"] == pytest.approx((q - p) / (p + q), abs=0.01)
    assert planned["with_drift"]["ratio"] == pytest.approx(optimum(1e8), rel=0.1)
    # Assuming invariance would pick far more classes than the drifting optimum.
    assert planned["invariant"]["classes"] > 2 * planned["with_drift"]["classes"]


def test_fallbacks_are_flagged_and_bad_points_named(tmp_path):
    flat = [{"size": 1e4, "classes": k, "error": 0.5 - 0.01 * k} for k in (10, 20, 40)]
    fit = optimal_ratio(flat)  # still falling at the largest K: the optimum is outside
    assert not fit["fitted"] and fit["ratio"] == pytest.approx(ratio(1e4, 40))
    two = optimal_ratio(flat[:2])
    assert not two["fitted"] and "fewer than 3" in two["note"]
    assert plan(flat, 1e6)["drift"] is None  # one size: no drift to fit
    capped = plan(flat, 1e6, max_classes=50)["invariant"]
    assert capped["classes"] == 50 and capped["capped_by_label_space"]
    with pytest.raises(ValueError, match="lacks"):
        plan([{"size": 10, "classes": 2}], 100)
    with pytest.raises(ValueError, match="1 <= classes <= size"):
        plan([{"size": 10, "classes": 20, "error": 0.1}], 100)
    points = _grid(lambda n, k: math.log(ratio(n, k)) ** 2, [1e3, 1e4], lambda n: 1.0)
    path = class_budget_contour(points, tmp_path / "contour.png", plan(points, 1e5))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
