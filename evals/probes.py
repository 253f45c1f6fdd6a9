"""Linear probes and few-shot classifiers on frozen embeddings.

Two probes, both with their regulariser chosen on a validation split carved out of the TRAIN
embeddings only (the test set is touched once, by the final classifier):
  ridge_probe     closed-form regularised least squares on +-1 one-hot targets with a bias,
                  W = (X^T X + lambda I)^-1 X^T Y (big_vision's fast few-shot evaluator's form)
  logistic_probe  multinomial logistic regression, L2-penalised, full-batch L-BFGS (optax)
few_shot(k) draws k training examples per class (per seed), fits the ridge probe and averages the
test accuracy over seeds. Embeddings are [N, D] float arrays, labels [N] ints in [0, K).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RIDGE_GRID = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4)
LOGISTIC_GRID = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)


def validation_split(num: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a training set of `num` examples."""
    if not 0 < fraction < 1:
        raise ValueError(f"Validation fraction must be in (0, 1), got {fraction}.")
    order = np.random.default_rng(seed).permutation(num)
    cut = max(1, int(round(num * fraction)))
    return order[cut:], order[:cut]


def fit_ridge(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float) -> np.ndarray:
    """W [D + 1, K] of regularised least squares onto +-1 one-hot targets (bias unpenalised)."""
    features = _with_bias(np.asarray(x, np.float64))
    targets = 2.0 * np.eye(num_classes)[y] - 1.0
    penalty = l2 * np.eye(features.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(features.T @ features + penalty, features.T @ targets)


def _accuracy(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((_with_bias(np.asarray(x, np.float64)) @ weights).argmax(-1) == y))


def _choose(fit, grid, train_x, train_y, val_fraction, seed) -> float:
    fit_idx, val_idx = validation_split(len(train_x), val_fraction, seed)
    scores = [
        _accuracy(fit(train_x[fit_idx], train_y[fit_idx], l2), train_x[val_idx], train_y[val_idx])
        for l2 in grid
    ]
    return float(grid[int(np.argmax(scores))])  # ties: the smallest penalty


def ridge_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    num_classes: int | None = None,
    grid: Sequence[float] = RIDGE_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, float]:
    """{"lp_acc1", "l2"}: lambda chosen on a split of the training data, then refit on all of it."""
    train_x, test_x = np.asarray(train_x), np.asarray(test_x)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    k = num_classes or int(max(train_y.max(), test_y.max()) + 1)

    def fit(x, y, l2):
        return fit_ridge(x, y, k, l2)

    l2 = _choose(fit, grid, train_x, train_y, val_fraction, seed)
    return {"lp_acc1": _accuracy(fit(train_x, train_y, l2), test_x, test_y), "l2": l2}


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, steps: int = 200):
    """W [D + 1, K] minimising mean cross-entropy + l2 / 2 * |W_no_bias|^2 (optax L-BFGS)."""
    import jax
    import jax.numpy as jnp
    import optax

    features = jnp.asarray(_with_bias(np.asarray(x, np.float32)))
    labels = jnp.asarray(y)
    mask = jnp.ones((features.shape[1], 1)).at[-1].set(0.0)

    def loss(w):
        logits = features @ w
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return nll + 0.5 * l2 * jnp.sum((w * mask) ** 2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def run(w):
        def step(carry, _):
            w, state = carry
            value, grad = value_and_grad(w, state=state)
            updates, state = solver.update(grad, state, w, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(step, (w, solver.init(w)), None, length=steps)
        return w

    return np.asarray(run(jnp.zeros((features.shape[1], num_classes))), np.float64)


def logistic_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    num_classes: int | None = None,
    grid: Sequence[float] = LOGISTIC_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    steps: int = 200,
) -> dict[str, float]:
    """{"lp_acc1", "l2"} of the logistic probe, regulariser chosen on a train split."""
    train_x, test_x = np.asarray(train_x), np.asarray(test_x)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    k = num_classes or int(max(train_y.max(), test_y.max()) + 1)

    def fit(x, y, l2):
        return fit_logistic(x, y, k, l2, steps)

    l2 = _choose(fit, grid, train_x, train_y, val_fraction, seed)
    return {"lp_acc1": _accuracy(fit(train_x, train_y, l2), test_x, test_y), "l2": l2}


def few_shot(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    shots: int,
    seeds: Sequence[int] = (0, 1, 2),
    num_classes: int | None = None,
    grid: Sequence[float] = RIDGE_GRID,
) -> dict[str, float]:
    """{"fewshot_{shots}_acc1", ..._std}: ridge probe on `shots` examples per class, averaged
    over seeds; the regulariser is chosen by leave-out within the sampled shots."""
    train_x, train_y = np.asarray(train_x), np.asarray(train_y)
    if len(test_y) == 0:
        raise ValueError("few_shot needs at least one test example.")
    k = num_classes or int(max(train_y.max(), np.max(test_y)) + 1)
    scores = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        chosen = []
        for label in range(k):
            pool = np.flatnonzero(train_y == label)
            if len(pool) < shots:
                raise ValueError(
                    f"Class {label} has {len(pool)} training examples; {shots}-shot needs {shots}."
                )
            chosen.extend(rng.choice(pool, shots, replace=False))
        chosen = np.asarray(chosen)
        fraction = 0.5 if shots >= 2 else 0.2
        scores.append(
            ridge_probe(
                train_x[chosen],
                train_y[chosen],
                test_x,
                test_y,
                num_classes=k,
                grid=grid,
                val_fraction=fraction,
                seed=seed,
            )["lp_acc1"]
        )
    return {
        f"fewshot_{shots}_acc1": float(np.mean(scores)),
        f"fewshot_{shots}_acc1_std": float(np.std(scores)),
    }
