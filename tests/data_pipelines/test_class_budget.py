"""Nested class-budget subsets and the subset source that reads them."""

import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines.input import InputPipeline
from data_pipelines.prepare import class_budget
from data_pipelines.sources import make_source


def _labels(seed=0, classes=12, per_class=(5, 30)):
    rng = np.random.default_rng(seed)
    counts = rng.integers(*per_class, size=classes)
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    return rng.permutation(labels)


def test_subsets_are_nested_balanced_and_deterministic():
    labels = _labels()
    study_max_n = 5
    subsets = {
        (k, n): class_budget.nested_subset(labels, k, n, seed=3, min_per_class=study_max_n)
        for k in (2, 4, 8)
        for n in (1, 3, 5)
    }
    for (k, n), (indices, classes) in subsets.items():
        assert len(indices) == k * n and len(classes) == k
        assert len(set(indices)) == len(indices)
        chosen, counts = np.unique(labels[indices], return_counts=True)
        assert set(chosen) == set(classes) and np.all(counts == n)
        for (k2, n2), (bigger, _) in subsets.items():
            if k <= k2 and n <= n2:
                assert set(indices) <= set(bigger)
    again, _ = class_budget.nested_subset(labels, 4, 3, seed=3, min_per_class=study_max_n)
    np.testing.assert_array_equal(again, subsets[(4, 3)][0])
    other, _ = class_budget.nested_subset(labels, 4, 3, seed=4, min_per_class=study_max_n)
    assert not np.array_equal(other, again)


def test_subset_errors_name_the_fix(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 2, -1])
    with pytest.raises(ValueError, match="Only 2 classes have at least 2 images"):
        class_budget.nested_subset(labels, 3, 2)
    with pytest.raises(ValueError, match="K >= 1 and n >= 1"):
        class_budget.nested_subset(labels, 0, 2)
    indices, _ = class_budget.nested_subset(labels, 2, 1)
    assert 6 not in indices  # an unreadable record (-1) is never chosen
    (tmp_path / "bad.json").write_text(json.dumps({"indices": [0]}))
    with pytest.raises(ValueError, match="not a hetclip subset file"):
        class_budget.load_subset(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="hetclip data subset"):
        class_budget.load_subset(tmp_path / "none.json")


@pytest.fixture()
def folders(tmp_path):
    """5 classes x 4 images (class k: grey level 40 k), plus one corrupt file in class 4."""
    root = tmp_path / "folders"
    for label in range(5):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(4):
            image = np.full((6, 6, 3), 40 * label, np.uint8)
            Image.fromarray(image).save(root / f"c{label}" / f"{i}.png")
    (root / "c4" / "broken.png").write_bytes(b"not a png")
    return root


def test_subset_source_reads_the_chosen_records_with_new_labels(folders, tmp_path):
    spec = {"kind": "folder", "root": str(folders)}
    source = make_source(spec)
    labels = class_budget.collect_labels(source)
    assert (labels == -1).sum() == 1 and source.skips.total == 1  # the corrupt file, counted
    indices, classes = class_budget.nested_subset(labels, 3, 2, seed=1)
    path = class_budget.save_subset(tmp_path / "s.json", indices, classes, source=spec)
    subset = make_source({"kind": "subset", "of": spec, "subset": str(path)})
    assert len(subset) == 6
    pipeline = InputPipeline(
        subset, "decode|keep('image', 'label')", global_batch_size=6, shuffle=False
    )
    batch = next(iter(pipeline.eval_batches()))
    new_labels = batch["label"][batch["_mask"].astype(bool)]
    grey = batch["image"][batch["_mask"].astype(bool)][:, 0, 0, 0]
    # Each image's new label is its old class's position in the subset's class order.
    old_labels = np.round(grey / 40).astype(int)
    np.testing.assert_array_equal(new_labels, [list(classes).index(k) for k in old_labels])
    assert sorted(np.bincount(new_labels)) == [2, 2, 2]
    (tmp_path / "far.json").write_text(
        json.dumps({"format": class_budget.FORMAT, "indices": [999], "classes": [0]})
    )
    with pytest.raises(ValueError, match="written for another source"):
        make_source({"kind": "subset", "of": spec, "subset": str(tmp_path / "far.json")})
