"""DET / HET / HET-XL heads against a straightforward materialising reference implementation,
hand-computed cases, statistics of the noise and Monte Carlo convergence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from hetclip.heads import DetHead, HetHead, HetXLHead
from hetclip.heads.counts import extra_parameters, head_parameter_count
from hetclip.heads.noise import noise_covariance, sample_low_rank_noise
from hetclip.heads.reference import materialised_log_likelihood, materialised_noisy_logits

B, D, K, R = 3, 6, 5, 2
PHI = jax.random.normal(jax.random.PRNGKey(0), (B, D))
INT_LABELS = jnp.array([0, 4, 2])
MULTI_LABELS = jnp.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0]], jnp.float32)
NOISE_KEY = jax.random.PRNGKey(42)


def labels_for(form: str) -> jax.Array:
    return INT_LABELS if form == "softmax" else MULTI_LABELS


def init(head, form):
    params = head.init({"params": jax.random.PRNGKey(1)}, PHI, labels_for(form), key=NOISE_KEY)
    return nn.meta.unbox(params)


def reference_noisy_logits(kind, params, phi, num_samples, chunk):
    return materialised_noisy_logits(kind, params, phi, NOISE_KEY, num_samples, chunk)


# chunk 4: three streamed chunks; chunk 12: all samples in one chunk.
@pytest.mark.parametrize("chunk", [4, 12])
@pytest.mark.parametrize("form", ["softmax", "sigmoid"])
@pytest.mark.parametrize("kind,cls", [("het", HetHead), ("hetxl", HetXLHead)])
def test_streaming_equals_materialising_reference_in_value_and_gradient(kind, cls, form, chunk):
    num_samples = 12
    head = cls(num_classes=K, num_factors=R, form=form, num_samples=num_samples, max_chunk=chunk)
    params = init(head, form)
    labels = labels_for(form)

    def streamed(params, phi):
        return head.apply(params, phi, labels, key=NOISE_KEY).sum()

    def materialised(params, phi):
        logits = reference_noisy_logits(kind, params, phi, num_samples, chunk)
        return materialised_log_likelihood(form, logits, labels).sum()

    value, grads = jax.value_and_grad(streamed, argnums=(0, 1))(params, PHI)
    ref_value, ref_grads = jax.value_and_grad(materialised, argnums=(0, 1))(params, PHI)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # The jitted version is the same computation.
    np.testing.assert_allclose(jax.jit(streamed)(params, PHI), ref_value, rtol=1e-5)


@pytest.mark.parametrize("form", ["softmax", "sigmoid"])
def test_probs_and_sample_probs_match_the_reference(form):
    head = HetXLHead(num_classes=K, num_factors=R, form=form, num_samples=8, max_chunk=4)
    params = init(head, form)
    samples = head.apply(params, PHI, mode="sample_probs", key=NOISE_KEY)
    logits = reference_noisy_logits("hetxl", params, PHI, 8, 4)
    expected = jax.nn.softmax(logits, -1) if form == "softmax" else jax.nn.sigmoid(logits)
    np.testing.assert_allclose(samples, expected, rtol=1e-5, atol=1e-7)
    probs = head.apply(params, PHI, mode="probs", key=NOISE_KEY)
    np.testing.assert_allclose(probs, expected.mean(1), rtol=1e-5, atol=1e-7)
    if form == "softmax":
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_det_head_matches_hand_computed_values():
    head = DetHead(num_classes=3)
    params = {"params": {"kernel": jnp.eye(2, 3), "bias": jnp.array([0.0, 0.0, 3.0])}}
    phi = jnp.array([[1.0, 2.0]])  # logits [1, 2, 3]
    log_z = np.log(np.e + np.e**2 + np.e**3)
    np.testing.assert_allclose(head.apply(params, phi, jnp.array([1])), [2 - log_z], rtol=1e-6)
    sigmoid = DetHead(num_classes=3, form="sigmoid")
    y = jnp.array([[1.0, 0.0, 1.0]])
    expected = (
        np.log(1 / (1 + np.e**-1)) + np.log(1 - 1 / (1 + np.e**-2)) + np.log(1 / (1 + np.e**-3))
    )
    np.testing.assert_allclose(sigmoid.apply(params, phi, y), [expected], rtol=1e-6)
    np.testing.assert_allclose(head.apply(params, phi, mode="locs"), [[1.0, 2.0, 3.0]])


def test_mc_average_is_of_probabilities_not_of_logits():
    # Two equally likely worlds with logits (+5, -5) and (-5, +5): the MC predictive is 50/50,
    # while the softmax of the averaged logits would also be 50/50 but a single world is 99.99%.
    def logits_fn(params, key, chunk):
        del key
        worlds = jnp.array([[5.0, -5.0], [-5.0, 5.0]])
        return jnp.tile(worlds, (chunk // 2, 1))[None] * params["scale"]

    from hetclip.heads import likelihood

    params = {"scale": jnp.float32(1.0)}
    ll = likelihood.mc_log_likelihood("softmax", logits_fn, params, jnp.array([0]), NOISE_KEY, 4, 4)
    np.testing.assert_allclose(ll, [np.log(0.5)], atol=1e-4)


def test_noise_covariance_matches_its_samples():
    dim, factors_rank = 4, 2
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    factors = jax.random.normal(keys[0], (factors_rank, dim))
    scale = jax.random.normal(keys[1], (1, dim))
    diag = jax.nn.softplus(jax.random.normal(keys[2], (1, dim)))
    eps = sample_low_rank_noise(jax.random.PRNGKey(7), factors, scale, diag, 200_000)[0]
    empirical = np.cov(np.asarray(eps), rowvar=False)
    expected = np.asarray(noise_covariance(factors, scale, diag)[0])
    np.testing.assert_allclose(empirical, expected, atol=0.03 * np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(eps).mean(0), 0.0, atol=0.02)  # zero-mean noise
    # The diagonal part is independent per dimension (not one scalar broadcast over D).
    diag_only = sample_low_rank_noise(jax.random.PRNGKey(8), factors * 0, scale, diag, 50_000)[0]
    off_diagonal = np.corrcoef(np.asarray(diag_only), rowvar=False)[~np.eye(dim, dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.03


def test_mc_estimate_converges_to_a_high_sample_reference():
    head = HetXLHead(num_classes=K, num_factors=R, num_samples=16, max_chunk=16)
    params = init(head, "softmax")
    params["params"]["noise"]["diag"]["bias"] = params["params"]["noise"]["diag"]["bias"] + 1.0

    def estimate(samples, seed):
        return head.apply(
            params, PHI, INT_LABELS, num_samples=samples, key=jax.random.PRNGKey(seed)
        )

    reference = estimate(32768, 1000)
    errors = {
        s: np.mean([np.abs(estimate(s, seed) - reference).mean() for seed in range(4)])
        for s in (2, 32, 512)
    }
    assert errors[32] < errors[2] and errors[512] < errors[32] / 2, errors
    assert errors[512] < 0.05


@pytest.mark.parametrize("form", ["softmax", "sigmoid"])
def test_gradients_are_finite_at_30k_classes(form):
    num_classes = 30_000
    head = HetXLHead(
        num_classes=num_classes,
        num_factors=4,
        form=form,
        num_samples=16,
        bias_init=-10.0 if form == "sigmoid" else 0.0,
    )
    phi = jax.random.normal(jax.random.PRNGKey(0), (2, 16))
    labels = (
        jnp.array([7, 29_999])
        if form == "softmax"
        else jax.nn.one_hot(jnp.array([7, 29_999]), num_classes)
    )
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, phi, labels, key=NOISE_KEY))
    loss, grads = jax.jit(
        jax.value_and_grad(lambda p: -head.apply(p, phi, labels, key=NOISE_KEY).mean())
    )(params)
    assert np.isfinite(loss)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["params"]["temperature"]["pre_sigmoid"])) > 0


def test_learned_temperature_starts_mid_range_and_stays_bounded():
    head = HetXLHead(num_classes=K, num_factors=R, num_samples=4)
    params = init(head, "softmax")
    locs = head.apply(params, PHI, mode="locs")
    raw = PHI @ params["params"]["kernel"] + params["params"]["bias"]
    np.testing.assert_allclose(locs, raw / 2.525, rtol=1e-5)
    params["params"]["temperature"]["pre_sigmoid"] = jnp.float32(50.0)
    np.testing.assert_allclose(head.apply(params, PHI, mode="locs"), raw / 5.0, rtol=1e-5)


def test_parameter_counts_follow_the_formulas_and_hetxl_is_independent_of_classes():
    dim, rank = 16, 3
    for classes in (10, 1000):
        det = head_parameter_count("det", classes, dim)
        assert det == dim * classes + classes
        extra = extra_parameters(classes, dim, rank)
        assert extra["het"] == rank * classes + 2 * (dim * classes + classes)
        assert extra["hetxl"] == rank * dim + 2 * (dim * dim + dim) + 1
    assert extra_parameters(29_593, 1024)["hetxl"] == extra_parameters(1000, 1024)["hetxl"]


def test_head_errors_name_the_problem():
    head = HetXLHead(num_classes=K, num_factors=R, num_samples=4)
    params = init(head, "softmax")
    with pytest.raises(ValueError, match="needs labels"):
        head.apply(params, PHI, key=NOISE_KEY)
    with pytest.raises(ValueError, match="Unknown head mode"):
        head.apply(params, PHI, mode="logits", key=NOISE_KEY)
    with pytest.raises(ValueError, match="form must be one of"):
        HetXLHead(num_classes=K, form="softplus").init(jax.random.PRNGKey(0), PHI, INT_LABELS)
