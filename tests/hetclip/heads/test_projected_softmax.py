"""The hand-written gradient of HET-XL's softmax block (hetclip.heads.projected_softmax) and the
XLA:CPU formulations it relies on (hetclip.heads.xla_cpu, the noise's written-out gradient)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from hetclip.heads import HetXLHead, noise
from hetclip.heads.noise import sample_low_rank_noise
from hetclip.heads.projected_softmax import projected_softmax_log_likelihood
from hetclip.heads.xla_cpu import sum_over_samples, written_once

B, S, D, K = 3, 5, 4, 7
KEYS = jax.random.split(jax.random.PRNGKey(0), 6)
EPS = jax.random.normal(KEYS[0], (B, S, D))
KERNEL = jax.random.normal(KEYS[1], (D, K))
LOCS = jax.random.normal(KEYS[2], (B, K))
LABELS = jnp.array([1, 6, 1])  # a repeated label: the kernel gradient's one-hot part adds up
COTANGENT = jnp.array([0.3, -1.2, 2.0])  # unequal: each example's weight must stay its own


def plain_log_likelihood(eps, kernel, locs, temperature, labels):
    """The definition, differentiated by autodiff: log (1/S) sum_s softmax(z_s)_y."""
    logits = (locs[:, None] + jnp.einsum("bsd,dk->bsk", eps, kernel)) / temperature
    log_probs = jax.nn.log_softmax(logits, -1)
    terms = jnp.take_along_axis(log_probs, labels[:, None, None], -1)[..., 0]
    return jax.nn.logsumexp(terms, -1) - jnp.log(eps.shape[1])


def _value_and_grads(fn, temperature):
    def weighted(eps, kernel, locs, temperature):
        return jnp.sum(COTANGENT * fn(eps, kernel, locs, temperature, LABELS))

    return jax.value_and_grad(weighted, argnums=(0, 1, 2, 3))(EPS, KERNEL, LOCS, temperature)


@pytest.mark.parametrize("temperature", [0.05, 0.7, 3.0])
def test_value_and_gradients_equal_autodiff_of_the_definition(temperature):
    tau = jnp.float32(temperature)
    value, grads = _value_and_grads(projected_softmax_log_likelihood, tau)
    want_value, want_grads = _value_and_grads(plain_log_likelihood, tau)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)  # a sum with cancellation
    for name, got, want in zip(("eps", "kernel", "locs", "tau"), grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5, err_msg=name)


def test_large_logits_stay_finite():
    # Logits in the thousands: the shift by each sample's maximum keeps every exp finite.
    tau = jnp.float32(0.05)
    value, grads = jax.value_and_grad(
        lambda k: jnp.sum(projected_softmax_log_likelihood(EPS * 30, k, LOCS, tau, LABELS))
    )(KERNEL)
    assert np.isfinite(value) and np.all(np.isfinite(grads))
    want = jax.grad(lambda k: jnp.sum(plain_log_likelihood(EPS * 30, k, LOCS, tau, LABELS)))(KERNEL)
    np.testing.assert_allclose(grads, want, rtol=1e-3, atol=1e-4)


def test_bfloat16_kernel_gives_gradients_in_its_own_dtypes():
    tau = jnp.float32(0.7)
    kernel = KERNEL.astype(jnp.bfloat16)
    grads = jax.grad(
        lambda e, k, locs: jnp.sum(projected_softmax_log_likelihood(e, k, locs, tau, LABELS)),
        argnums=(0, 1, 2),
    )(EPS, kernel, LOCS)
    assert [g.dtype for g in grads] == [jnp.float32, jnp.bfloat16, jnp.float32]
    want = jax.grad(lambda k: jnp.sum(plain_log_likelihood(EPS, k, LOCS, tau, LABELS)), argnums=0)(
        KERNEL
    )
    np.testing.assert_allclose(grads[1].astype(jnp.float32), want, rtol=0.05, atol=0.02)


def test_hetxl_head_takes_the_fused_block_for_integer_labels_only():
    head = HetXLHead(num_classes=K, num_factors=2, num_samples=S)
    phi = jax.random.normal(KEYS[3], (B, D))
    params = nn.meta.unbox(head.init({"params": KEYS[4]}, phi, LABELS, key=KEYS[5]))

    def jaxpr(labels):
        return str(
            jax.make_jaxpr(
                lambda p: head.apply(p, phi, labels, mode="mean_log_likelihood", key=KEYS[5])
            )(params)
        )

    assert "projected_softmax_log_likelihood" in jaxpr(LABELS)
    soft = jax.nn.one_hot(LABELS, K)
    assert "projected_softmax_log_likelihood" not in jaxpr(soft)


@pytest.mark.parametrize("written_from", [1, S + 1])  # the written-out form, then the plain one
def test_noise_gradients_equal_autodiff_of_the_plain_formula(monkeypatch, written_from):
    monkeypatch.setattr(noise, "WRITTEN_OUT_FROM_SAMPLES", written_from)
    factors = jax.random.normal(KEYS[0], (2, D))
    scale = jax.random.normal(KEYS[1], (B, D))
    diag = jax.nn.softplus(jax.random.normal(KEYS[2], (B, D))) + 0.1
    keys = jax.random.split(KEYS[3], B)
    weights = jax.random.normal(KEYS[4], (B, S, D))

    def plain(factors, scale, diag):
        z, e = jax.vmap(
            lambda k: (
                jax.random.normal(jax.random.split(k)[0], (1, S, 2)),
                jax.random.normal(jax.random.split(k)[1], (1, S, D)),
            )
        )(keys)
        low_rank = jnp.einsum("bsr,rm->bsm", z[:, 0], factors)
        return jnp.sum(weights * (low_rank * scale[:, None] + diag[:, None] * e[:, 0]))

    def written(factors, scale, diag):
        return jnp.sum(weights * sample_low_rank_noise(keys, factors, scale, diag, S))

    np.testing.assert_allclose(written(factors, scale, diag), plain(factors, scale, diag), 1e-5)
    got = jax.grad(written, argnums=(0, 1, 2))(factors, scale, diag)
    want = jax.grad(plain, argnums=(0, 1, 2))(factors, scale, diag)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_sum_over_samples_and_written_once():
    values = jax.random.normal(KEYS[0], (B, S, D))
    np.testing.assert_allclose(sum_over_samples(values), values.sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sum_over_samples(values[:, :1]), values[:, 0])
    written = jax.jit(written_once)
    np.testing.assert_array_equal(written(values, jnp.bool_(True)), values)
    assert np.all(np.isnan(written(values, jnp.bool_(False))))
    # The temperature check reaches the output: tau <= 0 gives NaN (on the CPU backend).
    value = projected_softmax_log_likelihood(EPS, KERNEL, LOCS, jnp.float32(-1.0), LABELS)
    assert np.all(np.isnan(value))
