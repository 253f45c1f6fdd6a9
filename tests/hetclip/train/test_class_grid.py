"""A class-budget grid end to end at test size: subsets, runs, probes, grid.json, resume."""

import json

import pytest

from evals.class_budget import plan
from hetclip.train.class_grid import grid_points, run_grid
from tests.hetclip.train.conftest import supervised_config


def test_grid_trains_probes_and_resumes(class_folders, tmp_path):
    config = supervised_config(class_folders, head="det")
    probe = {
        "train_data": {"kind": "folder", "root": str(class_folders)},
        "data": {"kind": "folder", "root": str(class_folders)},
    }
    config.input.pp_eval = "decode|resize(8)|value_range(-1, 1)|keep('image', 'label')"
    messages = []
    points = run_grid(config, [8, 16], [2, 4], probe, tmp_path, epochs=1, log=messages.append)
    assert [(p["size"], p["classes"], p["per_class"]) for p in points] == [
        (8, 2, 4),
        (8, 4, 2),
        (16, 2, 8),
        (16, 4, 4),
    ]
    assert all(
        0 <= p["error"] <= 1 and p["error"] == pytest.approx(1 - p["lp_acc1"]) for p in points
    )
    assert json.loads((tmp_path / "grid.json").read_text()) == points
    # Each run trained on its own subset: K classes renumbered 0..K-1, K n records.
    subset = json.loads((tmp_path / "subsets" / "N16_K4.json").read_text())
    assert len(subset["indices"]) == 16 and sorted(subset["classes"]) == [0, 1, 2, 3]
    smaller = json.loads((tmp_path / "subsets" / "N8_K2.json").read_text())
    assert set(smaller["indices"]) <= set(subset["indices"])  # nested
    run = json.loads((tmp_path / "N8_K4" / "config.json").read_text())
    assert run["model"]["head"]["num_classes"] == 4 and run["input"]["data"]["kind"] == "subset"
    assert sum("steps" in m for m in messages) == 4
    # Rerun: every cell is finished, nothing trains again, the same points come back.
    again = []
    assert run_grid(config, [8, 16], [2, 4], probe, tmp_path, epochs=1, log=again.append) == points
    assert not any("steps" in m for m in again)
    assert plan(points, 64)["per_size"].keys() == {"8", "16"}


def test_grid_points_and_bad_grids():
    assert grid_points([10, 3], [2, 4]) == [(10, 2, 5), (10, 4, 2), (3, 2, 1)]
    config = supervised_config("unused", head="det")
    with pytest.raises(ValueError, match="probe needs source specs"):
        run_grid(config, [8], [2], {"data": {}}, "unused")
    with pytest.raises(ValueError, match="n >= 1"):
        run_grid(config, [1], [2], {"data": {}, "train_data": {}}, "unused")
