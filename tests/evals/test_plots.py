"""Report figures are real PNGs drawn from the data they are given."""

import numpy as np
from PIL import Image

from evals.plots import reliability_diagram, training_curves


def test_reliability_diagram_and_training_curves_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 5, 200)
    path = reliability_diagram(probs, labels, tmp_path / "sub" / "rel.png", title="random")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
    runs = {
        "a": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}],
        "b": [{"step": 1, "loss": 4.0}],
    }
    curves = training_curves(runs, ["loss"], tmp_path / "curves.png")
    with Image.open(curves) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas
