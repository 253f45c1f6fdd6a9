"""Uncertainty decomposition, AUROC (vs scikit-learn) and the prediction rejection ratio."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evals.uncertainty import (
    auroc,
    dirichlet_uncertainty,
    entropy,
    ood_auroc,
    prediction_rejection_ratio,
    uncertainty_decomposition,
)


def test_decomposition_of_agreeing_and_disagreeing_members():
    same = [np.array([[0.5, 0.5]])] * 3
    agree = uncertainty_decomposition(iter(same))
    assert agree["knowledge"][0] == pytest.approx(0.0)
    assert agree["total"][0] == pytest.approx(np.log(2))
    confident_but_different = [
        np.array([[1.0, 0.0, 0.0]]),
        np.array([[0.0, 1.0, 0.0]]),
        np.array([[0.0, 0.0, 1.0]]),
    ]
    split = uncertainty_decomposition(confident_but_different)
    assert split["data"][0] == pytest.approx(0.0, abs=1e-9)
    assert split["knowledge"][0] == pytest.approx(np.log(3))
    np.testing.assert_allclose(split["mean_probs"], [[1 / 3] * 3])
    assert entropy(np.array([0.25] * 4)) == pytest.approx(np.log(4))
    with pytest.raises(ValueError, match="at least one member"):
        uncertainty_decomposition([])


def _kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def test_decomposition_epkl_and_mkl_match_pairwise_kl():
    rng = np.random.default_rng(0)
    members = rng.dirichlet(np.ones(5), size=(4, 3))  # M = 4 members, N = 3, K = 5
    parts = uncertainty_decomposition(iter(members))
    epkl = np.mean([_kl(p, q) for p in members for q in members], axis=0)
    mkl = np.mean([_kl(members.mean(0), p) for p in members], axis=0)
    np.testing.assert_allclose(parts["epkl"], epkl, rtol=1e-9)
    np.testing.assert_allclose(parts["mkl"], mkl, rtol=1e-9)
    np.testing.assert_allclose(parts["epkl"], parts["knowledge"] + parts["mkl"], rtol=1e-9)


def test_dirichlet_measures_match_samples_of_the_dirichlet():
    # Members drawn from Dir(alpha) decompose, in expectation, as the closed forms say.
    alpha = np.array([[2.0, 5.0, 1.0, 0.5], [30.0, 40.0, 10.0, 20.0]])
    rng = np.random.default_rng(1)
    draws = np.stack([[rng.dirichlet(a) for a in alpha] for _ in range(20_000)])
    sampled = uncertainty_decomposition(iter(draws))
    closed = dirichlet_uncertainty(alpha)
    np.testing.assert_allclose(closed["mean_probs"], alpha / alpha.sum(-1, keepdims=True))
    for name in ("total", "data", "knowledge"):
        np.testing.assert_allclose(closed[name], sampled[name], rtol=0.03)
    np.testing.assert_allclose(closed["epkl"], 3 / alpha.sum(-1))
    # The sharper Dirichlet has less knowledge uncertainty.
    assert closed["knowledge"][1] < closed["knowledge"][0] / 5
    with pytest.raises(ValueError, match="concentrations"):
        dirichlet_uncertainty(np.array([[1.0, -1.0]]))


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    positives = rng.random(300) < 0.3 + 0.4 * (scores > 0)
    assert auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)
    assert ood_auroc(np.zeros(5), np.ones(5)) == 1.0
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc(scores, np.ones(300, bool))


def test_prediction_rejection_ratio_oracle_random_and_reversed():
    rng = np.random.default_rng(2)
    errors = (rng.random(2000) < 0.3).astype(float)
    assert prediction_rejection_ratio(errors + 0.01 * rng.random(2000), errors) == pytest.approx(
        1.0
    )
    random_prr = np.mean([prediction_rejection_ratio(rng.random(2000), errors) for _ in range(20)])
    assert abs(random_prr) < 0.05
    assert prediction_rejection_ratio(-errors, errors) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="without any errors"):
        prediction_rejection_ratio(rng.random(5), np.zeros(5))
