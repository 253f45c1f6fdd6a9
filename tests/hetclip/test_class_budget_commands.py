"""The class-budget commands: data subset, class-grid's argument errors, plan-classes."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from hetclip.cli import main


def test_data_subset_and_plan_classes(tmp_path, capsys):
    for label in range(3):
        (tmp_path / "set" / f"c{label}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4, 3), label, np.uint8)).save(
                tmp_path / "set" / f"c{label}" / f"{i}.png"
            )
    spec = json.dumps({"kind": "folder", "root": str(tmp_path / "set")})
    labels = tmp_path / "labels.npy"
    argv = ["data", "subset", "--data", spec, "--classes", "2", "--per-class", "2"]
    assert main([*argv, "--labels", str(labels), "--out", str(tmp_path / "s.json")]) == 0
    assert labels.is_file() and "4 records of 2 classes" in capsys.readouterr().out
    written = json.loads((tmp_path / "s.json").read_text())
    assert len(written["indices"]) == 4 and written["num_classes"] == 2
    assert main([*argv[:3], "{kind: folder}", *argv[4:], "--out", str(tmp_path / "x")]) == 2
    assert "JSON source spec" in capsys.readouterr().err
    grid = [
        {"size": n, "classes": math.sqrt(r * n), "error": math.log(r / 0.1) ** 2}
        for n in (1e3, 1e4)
        for r in (0.01, 0.03, 0.1, 0.3, 1.0)
    ]
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    plot = tmp_path / "contour.png"
    args = ["plan-classes", "--grid", str(tmp_path / "grid.json"), "--target-size", "1e6"]
    assert main([*args, "--out", str(tmp_path / "plan.json"), "--plot", str(plot)]) == 0
    planned = json.loads((tmp_path / "plan.json").read_text())
    assert planned["invariant"]["ratio"] == pytest.approx(0.1, rel=1e-6)
    assert planned["invariant"]["classes"] == round(math.sqrt(0.1 * 1e6)) and plot.is_file()
    assert main(["plan-classes", "--grid", str(tmp_path / "no.json"), "--target-size", "9"]) == 2


def test_class_grid_names_bad_arguments(capsys):
    spec = '{"kind": "folder", "root": "/nowhere"}'
    argv = ["class-grid", "--config", "fashion_mnist.py:head=det", "--classes", "2,4"]
    argv += ["--probe-train", spec, "--probe-test", spec, "--workdir", "unused"]
    assert main([*argv, "--sizes", "100,lots"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main([*argv[:-6], "--probe-train", "{x", *argv[-4:], "--sizes", "10"]) == 2
    assert "--probe-train must be a JSON source spec" in capsys.readouterr().err
