"""Uncertainty from sets of predictive distributions, and how well it flags errors and OOD inputs.

Given M predictive distributions per example (ensemble members, or a HET/HET-XL head's MC
samples) the standard decomposition (e.g. Malinin & Gales; Depeweg et al.) is
  total     = H[mean_m p_m]
  data      = mean_m H[p_m]            (expected entropy, aleatoric)
  knowledge = total - data            (mutual information, epistemic for an ensemble)
  EPKL      = (1 / M^2) sum_i sum_j KL(p_i || p_j),   MKL = EPKL - knowledge
For a HET-XL head's samples the "knowledge" term measures the spread of the latent noise, which
is aleatoric by construction, not model disagreement: read it as such.
The statistics stream over members (running sums of p, ln p and p ln p), so K = 30k classes and
many members never need an [N, M, K] array at once.

A Dirichlet student (PD-EnD2, hetclip/losses/dirichlet.py) gives the same measures in closed
form from its concentrations alpha (Malinin & Gales 2018; Ryabinin et al. 2021), p = alpha /
alpha0: total = H[p], data = -sum_k p_k (psi(alpha_k + 1) - psi(alpha0 + 1)), knowledge =
total - data, EPKL = (K - 1) / alpha0, MKL = EPKL - knowledge.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.special import digamma

_EPS = 1e-12


def entropy(probs: np.ndarray) -> np.ndarray:
    """[..., K] -> [...] in nats."""
    probs = np.asarray(probs, np.float64)
    return -np.sum(probs * np.log(np.clip(probs, _EPS, 1.0)), axis=-1)


def uncertainty_decomposition(member_probs: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """{"mean_probs" [N, K], "total", "data", "knowledge", "epkl", "mkl" [N]} from an iterable
    of [N, K] member distributions, consumed one member at a time."""
    sums, count = None, 0
    for probs in member_probs:
        probs = np.asarray(probs, np.float64)
        log_probs = np.log(np.clip(probs, _EPS, 1.0))
        terms = (probs, log_probs, probs * log_probs)
        sums = list(terms) if sums is None else [a + b for a, b in zip(sums, terms, strict=True)]
        count += 1
    if count == 0:
        raise ValueError("uncertainty_decomposition needs at least one member.")
    mean_probs, mean_log_probs, mean_p_log_p = (total / count for total in sums)
    total, data = entropy(mean_probs), -mean_p_log_p.sum(-1)
    knowledge = np.maximum(total - data, 0.0)
    epkl = np.maximum((mean_p_log_p - mean_probs * mean_log_probs).sum(-1), 0.0)
    return _measures(mean_probs, total, data, knowledge, epkl)


def dirichlet_uncertainty(alpha: np.ndarray) -> dict[str, np.ndarray]:
    """The decomposition's measures of Dir(alpha) in closed form (module docstring): alpha
    [N, K] concentrations (> 0; for a PD-EnD2 student, exp(logits) + 1) -> {"mean_probs"
    [N, K], "total", "data", "knowledge", "epkl", "mkl" [N]}."""
    alpha = np.asarray(alpha, np.float64)
    if alpha.ndim < 1 or alpha.shape[-1] < 2 or not np.all(alpha > 0):
        raise ValueError(
            f"dirichlet_uncertainty needs concentrations [N, K] > 0 with K >= 2; got shape "
            f"{alpha.shape}, min {alpha.min() if alpha.size else None}."
        )
    alpha0 = alpha.sum(-1)
    mean_probs = alpha / alpha0[..., None]
    total = entropy(mean_probs)
    data = -(mean_probs * (digamma(alpha + 1) - digamma(alpha0 + 1)[..., None])).sum(-1)
    knowledge = np.maximum(total - data, 0.0)
    return _measures(mean_probs, total, data, knowledge, (alpha.shape[-1] - 1) / alpha0)


def _measures(mean_probs, total, data, knowledge, epkl) -> dict[str, np.ndarray]:
    return {
        "mean_probs": mean_probs,
        "total": total,
        "data": data,
        "knowledge": knowledge,
        "epkl": epkl,
        "mkl": np.maximum(epkl - knowledge, 0.0),
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
