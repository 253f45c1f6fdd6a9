"""Calibration metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from evals.calibration import (
    brier_score,
    confidence_bins,
    expected_calibration_error,
    mean_per_class_recall,
    negative_log_likelihood,
    reliability_bins,
    top_k_accuracy,
)


def test_ece_is_zero_for_a_perfectly_calibrated_predictor():
    # Confidence 0.7 on class 0 and right exactly 70% of the time; 0.9 and right 90%.
    probs = np.array([[0.7, 0.3]] * 100 + [[0.1, 0.9]] * 100)
    labels = np.array([0] * 70 + [1] * 30 + [1] * 90 + [0] * 10)
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_on_a_hand_computed_overconfident_predictor():
    probs = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 5 + [1] * 5)  # 90% confident, 50% right
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    bins = reliability_bins(probs, labels, num_bins=10)
    assert bins.counts[8] == 10 and bins.counts.sum() == 10  # 0.9 lands in (0.8, 0.9]
    assert bins.accuracy[8] == pytest.approx(0.5)
    assert np.isnan(bins.accuracy[0])
    with pytest.raises(ValueError, match="num_bins"):
        reliability_bins(probs, labels, num_bins=0)


def test_nll_and_brier_match_scikit_learn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 4, 200)
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        log_loss(labels, probs, labels=range(4)), rel=1e-9
    )
    binary = probs[:, :2] / probs[:, :2].sum(-1, keepdims=True)
    binary_labels = labels % 2
    # Ours sums the squared error over both classes: twice sklearn's binary Brier score.
    assert brier_score(binary, binary_labels) == pytest.approx(
        2 * brier_score_loss(binary_labels, binary[:, 1]), rel=1e-9
    )


def test_accuracy_metrics_on_hand_cases():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    labels = np.array([0, 1, 1, 1])
    assert top_k_accuracy(probs, labels, 1) == pytest.approx(0.5)
    assert top_k_accuracy(probs, labels, 2) == pytest.approx(1.0)
    # class 0: 1/1 right; class 1: 1/3 right -> mean 2/3
    assert mean_per_class_recall(probs, labels) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="Expected probs"):
        top_k_accuracy(probs[0], labels)


def test_confidence_bins_of_argmax_correctness_equal_reliability_bins():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=200)
    labels = rng.integers(0, 5, 200)
    a = reliability_bins(probs, labels, 7)
    b = confidence_bins(probs.max(-1), probs.argmax(-1) == labels, 7)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_allclose(a.accuracy, b.accuracy)
    with pytest.raises(ValueError, match="confidence"):
        confidence_bins(probs, labels)
