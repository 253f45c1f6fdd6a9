"""Teacher statistics streamed over members, against explicit [M, B, K] computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetclip.losses import ensemble_targets as et


def _kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def _members(seed=0, members=5, batch=3, classes=7):
    return np.random.default_rng(seed).normal(size=(members, batch, classes)).astype(np.float32)


def test_streamed_sums_give_the_explicit_ensemble_statistics():
    logits = _members()
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    stats = et.scan_members(lambda x: x, jnp.asarray(logits))
    pibar = probs.mean(0)
    assert float(stats.count) == 5
    np.testing.assert_allclose(stats.mean_probs(), pibar, rtol=1e-5)
    mkl = np.mean([_kl(pibar, p) for p in probs], axis=0)
    epkl = np.mean([_kl(p, q) for p in probs for q in probs], axis=0)  # (1 / M^2) sum_ij
    np.testing.assert_allclose(stats.mkl(), mkl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.epkl(), epkl, rtol=1e-4, atol=1e-6)
    # Adding members one at a time is the same computation.
    one_by_one = et.empty_stats(pibar.shape)
    for member in logits:
        one_by_one = et.add_member(one_by_one, member)
    for a, b in zip(one_by_one, stats, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_scan_members_applies_a_function_to_stacked_parameters():
    rng = np.random.default_rng(1)
    inputs = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)  # M = 3 linear teachers
    stats = et.scan_members(lambda w: inputs @ w, weights)
    expected = np.mean([jax.nn.softmax(inputs @ w) for w in weights], axis=0)
    np.testing.assert_allclose(stats.mean_probs(), expected, rtol=1e-5)


@pytest.mark.parametrize("estimator", et.PRECISION_ESTIMATORS)
def test_proxy_precision_recovers_the_precision_of_dirichlet_members(estimator):
    # Members drawn from Dir(beta0 * m) with beta0 >> K: the estimate lands near beta0.
    rng = np.random.default_rng(0)
    classes, beta0, members = 10, 1000.0, 200
    means = rng.dirichlet(np.full(classes, 2.0), size=4)
    draws = np.stack([[rng.dirichlet(m * beta0) for m in means] for _ in range(members)])
    stats = et.scan_members(lambda x: x, jnp.log(jnp.asarray(draws, jnp.float32)))
    target = et.proxy_target(stats, estimator)
    np.testing.assert_allclose(target.precision, beta0, rtol=0.1)
    np.testing.assert_allclose(target.mean_probs, draws.mean(0), rtol=1e-4)
    beta = target.concentrations()
    np.testing.assert_allclose(beta.sum(-1), target.precision + classes, rtol=1e-5)


def test_agreeing_members_give_a_capped_or_huge_precision_and_bad_estimator_is_named():
    logits = np.repeat(_members(members=1), 4, axis=0)  # four identical members
    stats = et.scan_members(lambda x: x, jnp.asarray(logits))
    assert np.all(np.asarray(stats.mkl()) < 1e-6)
    assert np.all(np.asarray(et.proxy_target(stats).precision) > 1e5)
    capped = et.proxy_target(stats, max_precision=500.0)
    np.testing.assert_allclose(capped.precision, 500.0)
    with pytest.raises(ValueError, match="estimator must be one of"):
        et.proxy_target(stats, "variance")
