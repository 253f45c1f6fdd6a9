"""Uncertainty from sets of predictive distributions, and how well it flags errors and OOD inputs.

Given M predictive distributions per example (ensemble members, or a HET/HET-XL head's MC
samples) the standard decomposition (e.g. Malinin & Gales; Depeweg et al.) is
  total     = H[mean_m p_m]
  data      = mean_m H[p_m]            (expected entropy, aleatoric)
  knowledge = total - data            (mutual information, epistemic for an ensemble)
For a HET-XL head's samples the "knowledge" term measures the spread of the latent noise, which
is aleatoric by construction, not model disagreement: read it as such.
The statistics stream over members (running sums of p and of H[p]), so K = 30k classes and many
members never need an [N, M, K] array at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_EPS = 1e-12


def entropy(probs: np.ndarray) -> np.ndarray:
    """[..., K] -> [...] in nats."""
    probs = np.asarray(probs, np.float64)
    return -np.sum(probs * np.log(np.clip(probs, _EPS, 1.0)), axis=-1)


def uncertainty_decomposition(member_probs: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """{"mean_probs" [N, K], "total", "data", "knowledge" [N]} from an iterable of [N, K]
    member distributions, consumed one member at a time."""
    total_probs, total_entropy, count = None, None, 0
    for probs in member_probs:
        probs = np.asarray(probs, np.float64)
        total_probs = probs.copy() if total_probs is None else total_probs + probs
        h = entropy(probs)
        total_entropy = h if total_entropy is None else total_entropy + h
        count += 1
    if count == 0:
        raise ValueError("uncertainty_decomposition needs at least one member.")
    mean_probs = total_probs / count
    total, data = entropy(mean_probs), total_entropy / count
    return {
        "mean_probs": mean_probs,
        "total": total,
        "data": data,
        "knowledge": np.maximum(total - data, 0.0),
    }


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` separating positives (True) from negatives, with
    ties counted half (the Mann-Whitney U statistic)."""
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative examples.")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ood_auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """OOD detection AUROC with OOD as the positive class and uncertainty as the score."""
    scores = np.concatenate([in_scores, out_scores])
    positives = np.concatenate([np.zeros(len(in_scores), bool), np.ones(len(out_scores), bool)])
    return auroc(scores, positives)


def _rejection_area(errors_sorted: np.ndarray) -> float:
    """Area under the error-rate-vs-rejected-fraction curve for a given rejection order."""
    n = len(errors_sorted)
    # After rejecting the first r examples, the error rate over all n counts rejected as correct.
    remaining_errors = errors_sorted.sum() - np.concatenate([[0], np.cumsum(errors_sorted)])
    return float(np.mean(remaining_errors / n))


def prediction_rejection_ratio(uncertainty: np.ndarray, errors: np.ndarray) -> float:
    """PRR (Malinin 2019): (AUC_random - AUC_uncertainty) / (AUC_random - AUC_oracle) of the
    rejection curve that rejects the most uncertain predictions first; 1 for an oracle, about 0
    for random scores, negative when uncertainty ranks correct predictions first."""
    errors = np.asarray(errors, np.float64)
    if errors.sum() == 0:
        raise ValueError("PRR is undefined without any errors.")
    by_uncertainty = errors[np.argsort(-np.asarray(uncertainty), kind="mergesort")]
    oracle = np.sort(errors)[::-1]
    random_area = _rejection_area(np.full_like(errors, errors.mean()))
    return (random_area - _rejection_area(by_uncertainty)) / (random_area - _rejection_area(oracle))
