"""Linear probes and few-shot: correct on separable data, close to scikit-learn, and the
regulariser is chosen without looking at the test set."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from evals.probes import few_shot, fit_ridge, logistic_probe, ridge_probe, validation_split


def _blobs(n_per_class=60, classes=4, dim=8, spread=0.6, seed=0):
    """Gaussian blobs around the same class centres for every seed (train and test alike)."""
    centres = np.random.default_rng(123).normal(size=(classes, dim)) * 3
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), dim))
    order = rng.permutation(len(y))
    return x[order], y[order]


def test_ridge_closed_form_solves_the_normal_equations():
    x, y = _blobs(10, 3, 4)
    w = fit_ridge(x, y, 3, l2=0.5)
    features = np.concatenate([x, np.ones((len(x), 1))], 1)
    targets = 2 * np.eye(3)[y] - 1
    penalty = 0.5 * np.eye(5)
    penalty[-1, -1] = 0
    np.testing.assert_allclose(
        (features.T @ features + penalty) @ w, features.T @ targets, atol=1e-8
    )


def test_probes_separate_separable_classes_and_match_sklearn():
    x, y = _blobs()
    tx, ty = _blobs(seed=1)
    ridge = ridge_probe(x, y, tx, ty)
    logistic = logistic_probe(x, y, tx, ty)
    assert ridge["lp_acc1"] > 0.95 and logistic["lp_acc1"] > 0.95
    noisy_x, noisy_y = _blobs(spread=3.0, seed=2)
    test_x, test_y = _blobs(spread=3.0, seed=3)
    ours = logistic_probe(noisy_x, noisy_y, test_x, test_y, grid=(1e-2,))["lp_acc1"]
    # sklearn's C is 1 / (n * l2) for a mean loss with penalty l2 / 2 |w|^2.
    reference = LogisticRegression(C=1 / (len(noisy_x) * 1e-2), max_iter=2000).fit(noisy_x, noisy_y)
    assert ours == pytest.approx(reference.score(test_x, test_y), abs=0.03)


def test_regulariser_choice_never_sees_the_test_set():
    x, y = _blobs(spread=2.5)
    tx, ty = _blobs(spread=2.5, seed=1)
    chosen = ridge_probe(x, y, tx, ty)["l2"]
    shuffled = ridge_probe(x, y, tx, np.random.default_rng(5).permutation(ty))["l2"]
    assert chosen == shuffled
    fit_idx, val_idx = validation_split(100, 0.2, seed=0)
    assert len(val_idx) == 20 and not set(fit_idx) & set(val_idx)
    assert sorted(np.concatenate([fit_idx, val_idx])) == list(range(100))


def test_few_shot_averages_over_seeds_and_names_missing_shots():
    x, y = _blobs()
    tx, ty = _blobs(seed=1)
    result = few_shot(x, y, tx, ty, shots=5, seeds=(0, 1, 2))
    assert result["fewshot_5_acc1"] > 0.9 and result["fewshot_5_acc1_std"] >= 0
    with pytest.raises(ValueError, match="100-shot needs 100"):
        few_shot(x, y, tx, ty, shots=100)
