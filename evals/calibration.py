"""Calibration of probabilistic predictions: ECE, NLL, Brier, reliability-diagram data.

Pure numpy functions of predicted probabilities [N, K] and integer labels [N]; they work for
zero-shot predictions (softmax of the learned logit scale times cosine similarities, or a HET-XL
MC average) as for supervised heads.
  ECE (Guo et al. 2017; equal-width bins of the top-1 confidence):
      sum_b (n_b / N) |accuracy_b - mean confidence_b|
  NLL: -mean log p(y_i);  Brier: mean_i sum_k (p_ik - [k == y_i])^2
"""

from __future__ import annotations

import dataclasses

import numpy as np

_EPS = 1e-12


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"Expected probs [N, K] and labels [N]; got {probs.shape}, {labels.shape}."
        )
    return probs, labels.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of top-1 confidence: edges [B + 1], counts / accuracy / confidence [B]
    (accuracy and confidence are NaN for empty bins)."""

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray


def reliability_bins(probs, labels, num_bins: int = 15) -> ReliabilityBins:
    """Top-1 confidences sorted into `num_bins` equal-width bins of [0, 1]."""
    probs, labels = _check(probs, labels)
    return confidence_bins(probs.max(-1), probs.argmax(-1) == labels, num_bins)


def confidence_bins(confidence, correct, num_bins: int = 15) -> ReliabilityBins:
    """Confidences [N] with their correctness [N] (bool) in `num_bins` equal-width bins; for
    predictions whose "correct" is not argmax == label (e.g. multi-label "any correct")."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    if confidence.ndim != 1 or correct.shape != confidence.shape:
        raise ValueError(
            f"Expected confidence [N] and correct [N]; got {confidence.shape}, {correct.shape}."
        )
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Right-closed bins (a confidence of exactly 1 falls in the last bin).
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, correct, num_bins) / counts
        mean_confidence = np.bincount(index, confidence, num_bins) / counts
    return ReliabilityBins(edges, counts, accuracy, mean_confidence)


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
    return bins_calibration_error(reliability_bins(probs, labels, num_bins))


def bins_calibration_error(bins: ReliabilityBins) -> float:
    """ECE of already binned confidences: sum_b (n_b / N) |accuracy_b - confidence_b|."""
    filled = bins.counts > 0
    weights = bins.counts[filled] / bins.counts.sum()
    return float(np.sum(weights * np.abs(bins.accuracy[filled] - bins.confidence[filled])))


def negative_log_likelihood(probs, labels) -> float:
    probs, labels = _check(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0))))


def brier_score(probs, labels) -> float:
    probs, labels = _check(probs, labels)
    one_hot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=-1)))


def top_k_accuracy(probs, labels, k: int = 1) -> float:
    probs, labels = _check(probs, labels)
    top = np.argsort(-probs, axis=-1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=-1)))


def mean_per_class_recall(probs, labels) -> float:
    """Mean over classes present in `labels` of the fraction of their examples ranked top-1."""
    probs, labels = _check(probs, labels)
    correct = probs.argmax(-1) == labels
    return float(np.mean([correct[labels == c].mean() for c in np.unique(labels)]))
