"""Supervised classifiers evaluated during training: accuracy, calibration, MC uncertainty of
HET / HET-XL heads and OOD detection, for softmax and sigmoid heads."""

import numpy as np
import pytest
from PIL import Image

from hetclip.train.evaluators import evaluator_from_config
from hetclip.train.loop import train
from tests.hetclip.train.conftest import supervised_config


@pytest.fixture(scope="module")
def noise_folders(tmp_path_factory):
    """Out-of-distribution images: 2 folders of random noise (no class's solid colour)."""
    root = tmp_path_factory.mktemp("ood")
    rng = np.random.default_rng(1)
    for name in ("noise_a", "noise_b"):
        (root / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def _evaluated_run(class_folders, noise_folders, tmp_path, head, form):
    config = supervised_config(class_folders, "eval_every=3", head=head, form=form)
    config.input.pp_eval = "decode|resize(8)|value_range(-1, 1)|keep('image', 'label')"
    config.evals = {
        "train_set": {
            "kind": "classification",
            "data": {"kind": "folder", "root": str(class_folders)},
            "ood_data": {"kind": "folder", "root": str(noise_folders)},
            "mc_samples": 8,
        }
    }
    metrics = train(config, tmp_path, evaluate=evaluator_from_config(config, tmp_path))
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("train_set/")}


def test_hetxl_softmax_classifier_gets_calibration_mc_uncertainty_and_ood(
    class_folders, noise_folders, tmp_path
):
    metrics = _evaluated_run(class_folders, noise_folders, tmp_path, "hetxl", "softmax")
    for prefix in ("", "mc_"):
        assert 0 <= metrics[f"{prefix}acc1"] <= metrics[f"{prefix}acc5"] <= 1
        assert metrics[f"{prefix}nll"] > 0 and 0 <= metrics[f"{prefix}ece"] <= 1
        assert 0 <= metrics[f"{prefix}brier"] <= 2
        assert 0 <= metrics[f"{prefix}ood_auroc"] <= 1
    total, data = metrics["mc_total_uncertainty"], metrics["mc_data_uncertainty"]
    assert 0 <= data <= total <= np.log(4) + 1e-9
    assert metrics["mc_knowledge_uncertainty"] == pytest.approx(total - data, abs=1e-9)
    saved = np.load(tmp_path / "evals" / "train_set.npz")
    assert saved["locs"].shape == (32, 4) and saved["mc_probs"].shape == (32, 4)
    np.testing.assert_allclose(saved["mc_probs"].sum(-1), 1.0, atol=1e-6)


def test_det_sigmoid_classifier_gets_its_own_metrics_and_no_mc(
    class_folders, noise_folders, tmp_path
):
    metrics = _evaluated_run(class_folders, noise_folders, tmp_path, "det", "sigmoid")
    assert {"acc1", "acc5", "binary_nll", "ece", "ood_auroc"} <= set(metrics)
    assert not any(k.startswith("mc_") for k in metrics)  # a DET head has no noise
    assert metrics["binary_nll"] > 0


def test_classifier_evals_reject_two_tower_kinds(class_folders, tmp_path):
    config = supervised_config(class_folders)
    config.evals = {"zs": {"kind": "zeroshot", "split": "test"}}
    with pytest.raises(ValueError, match="classification"):
        evaluator_from_config(config, tmp_path)
