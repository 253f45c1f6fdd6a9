"""Dirichlet pieces against scipy, and the EnD / EnD2 / PD-EnD2 losses' defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from hetclip.losses import dirichlet as d
from hetclip.losses import ensemble_targets as et


def _alphas(seed=0, batch=4, classes=6):
    return np.random.default_rng(seed).uniform(0.3, 20.0, size=(batch, classes))


def test_entropy_and_density_match_scipy():
    alpha = _alphas()
    probs = np.random.default_rng(1).dirichlet(np.ones(6), size=4)
    entropy = d.dirichlet_entropy(jnp.asarray(alpha, jnp.float32))
    density = d.dirichlet_log_density(
        jnp.asarray(np.log(probs), jnp.float32), jnp.asarray(alpha, jnp.float32)
    )
    for i in range(4):
        assert float(entropy[i]) == pytest.approx(scipy_stats.dirichlet(alpha[i]).entropy(), 1e-4)
        expected = scipy_stats.dirichlet(alpha[i]).logpdf(probs[i])
        assert float(density[i]) == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_kl_is_zero_at_equality_and_matches_a_monte_carlo_estimate():
    alpha, beta = _alphas(0, 1, 4)[0], _alphas(1, 1, 4)[0]
    kl = float(d.dirichlet_kl(jnp.asarray(alpha), jnp.asarray(beta)))
    samples = np.random.default_rng(2).dirichlet(alpha, size=200_000)
    estimate = np.mean(
        scipy_stats.dirichlet(alpha).logpdf(samples.T)
        - scipy_stats.dirichlet(beta).logpdf(samples.T)
    )
    assert kl == pytest.approx(estimate, rel=0.03)
    assert float(d.dirichlet_kl(jnp.asarray(alpha), jnp.asarray(alpha))) == pytest.approx(
        0.0, abs=1e-4
    )


def _target(seed=0, batch=3, classes=6):
    rng = np.random.default_rng(seed)
    mean_probs = jnp.asarray(rng.dirichlet(np.ones(classes), size=batch), jnp.float32)
    return et.ProxyTarget(mean_probs, jnp.asarray([50.0, 5.0, 300.0][:batch]))


def test_proxy_loss_is_the_scaled_reverse_kl_up_to_a_constant():
    target = _target()
    beta = target.concentrations()
    rng = np.random.default_rng(3)
    differences = []
    for _ in range(3):
        logits = jnp.asarray(rng.normal(size=(3, 6)) * 2, jnp.float32)

        def scaled_kl(z):  # [B]
            return d.dirichlet_kl(d.concentrations(z), beta) / target.precision

        differences.append(d.proxy_dirichlet_loss(logits, target) - scaled_kl(logits))
        loss_grad = jax.grad(lambda z: d.proxy_dirichlet_loss(z, target).sum())(logits)
        kl_grad = jax.grad(lambda z: scaled_kl(z).sum())(logits)
        np.testing.assert_allclose(loss_grad, kl_grad, rtol=1e-3, atol=1e-5)
    # The same per-example constant for every student.
    np.testing.assert_allclose(differences[0], differences[1], rtol=1e-4)
    np.testing.assert_allclose(differences[0], differences[2], rtol=1e-4)


def test_proxy_loss_is_minimal_where_the_student_mean_is_the_ensemble_mean():
    target = _target()
    optimum = jnp.log(target.mean_probs * target.precision[:, None])  # alpha = beta
    gradient = jax.grad(lambda z: d.proxy_dirichlet_loss(z, target).sum())(optimum)
    assert float(jnp.abs(gradient).max()) < 1e-4
    np.testing.assert_allclose(jax.nn.softmax(optimum), target.mean_probs, rtol=1e-5)
    at_optimum = d.proxy_dirichlet_loss(optimum, target)
    for shift in (0.3 * jnp.ones(6), -0.2 * jnp.arange(6.0)):
        assert np.all(np.asarray(d.proxy_dirichlet_loss(optimum + shift, target)) > at_optimum)


def test_end_and_end2_losses_against_explicit_member_computations():
    rng = np.random.default_rng(4)
    member_logits = rng.normal(size=(5, 3, 6)).astype(np.float32)
    exp = np.exp(member_logits.astype(np.float64))
    member_probs = exp / exp.sum(-1, keepdims=True)
    stats = et.scan_members(lambda x: x, jnp.asarray(member_logits))
    student = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    pibar = member_probs.mean(0)
    student_probs = np.asarray(jax.nn.softmax(student))
    expected_end = np.sum(pibar * (np.log(pibar) - np.log(student_probs)), -1)
    np.testing.assert_allclose(d.end_loss(student, stats.mean_probs()), expected_end, rtol=1e-4)
    alpha = np.exp(np.asarray(student, np.float64)) + 1
    expected_end2 = [
        -np.mean([scipy_stats.dirichlet(alpha[i]).logpdf(p[i]) for p in member_probs])
        for i in range(3)
    ]
    np.testing.assert_allclose(
        d.end2_loss(student, stats.mean_log_probs()), expected_end2, rtol=1e-4
    )


def test_concentrations_stay_finite_for_huge_logits():
    alpha = d.concentrations(jnp.asarray([[1e4, 0.0, -1e4]]))
    assert np.all(np.isfinite(np.asarray(alpha)))
    np.testing.assert_allclose(alpha[0, 1:], [2.0, 1.0])
    loss = d.proxy_dirichlet_loss(jnp.asarray([[1e4, 0.0, -1e4]]), _target(classes=3, batch=1))
    assert np.all(np.isfinite(np.asarray(loss)))
