"""The one-pass value-and-gradient path (hetclip.heads.fused) and the heads' training mode built
on it, against plain autodiff and the materialising reference with the same noise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from hetclip.heads import DetHead, HetHead, HetXLHead
from hetclip.heads.fused import examples_per_block, weighted_sum
from hetclip.heads.hetxl import FOLDED_BELOW_SAMPLES
from hetclip.heads.reference import (
    materialised_keyed_noisy_logits,
    materialised_log_likelihood,
    materialised_noisy_logits,
)
from hetclip.sharding import make_mesh

B, D, K, R, S = 16, 6, 5, 2, 12
PHI = jax.random.normal(jax.random.PRNGKey(0), (B, D))
INT_LABELS = jnp.array([0, 4, 2, 1, 3, 3, 0, 2, 1, 1, 4, 0, 2, 3, 4, 0])
KEY = jax.random.PRNGKey(42)


def assert_same_value_and_grads(value, grads, want_value, want_grads) -> None:
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def _toy_block(shared, per_example, aux):
    """[b]: a nonlinear function of a shared matrix, per-example rows and integer labels."""
    hidden = jnp.tanh(per_example["x"] @ shared["w"])  # [b, K]
    return (
        jax.nn.log_softmax(hidden * shared["s"])[jnp.arange(aux.shape[0]), aux] * (per_example["c"])
    )


def _toy_inputs():
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    shared = {"w": jax.random.normal(keys[0], (D, K)), "s": jnp.float32(1.7)}
    per_example = {"x": jax.random.normal(keys[1], (B, D)), "c": jax.random.uniform(keys[2], (B,))}
    weights = jax.random.uniform(keys[3], (B,))
    return shared, per_example, weights


@pytest.mark.parametrize("block", [1, 2, 4, 8])
def test_weighted_sum_equals_plain_autodiff(block):
    shared, per_example, weights = _toy_inputs()

    def fused(shared, per_example, weights):
        return 3.0 * weighted_sum(_toy_block, shared, per_example, INT_LABELS, weights, block)

    def plain(shared, per_example, weights):
        return 3.0 * jnp.sum(weights * _toy_block(shared, per_example, INT_LABELS))

    args = (shared, per_example, weights)
    value, grads = jax.value_and_grad(fused, argnums=(0, 1, 2))(*args)
    want_value, want_grads = jax.value_and_grad(plain, argnums=(0, 1, 2))(*args)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        # Blocks sum the shared gradients in another order: float32 rounding of gradients of
        # size ~1 reached 5.7e-7 on an AVX2 CPU (1.3e-5 relative at an entry of 0.04).
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(fused)(*args), want_value, rtol=1e-6)


def test_weighted_sum_rejects_a_block_that_does_not_divide_the_batch():
    shared, per_example, weights = _toy_inputs()
    with pytest.raises(ValueError, match="does not divide the batch 16"):
        weighted_sum(_toy_block, shared, per_example, INT_LABELS, weights, 3)


def test_examples_per_block_keeps_whole_examples_on_each_device():
    assert examples_per_block(32, per_device=1, devices=1) == 1
    assert examples_per_block(32, per_device=1, devices=8) == 8
    assert examples_per_block(32, per_device=3, devices=8) == 16  # 2 of each device's 4
    assert examples_per_block(30, per_device=4, devices=8) == 3  # 8 does not divide 30
    assert examples_per_block(32, per_device=0, devices=1) == 1


def _head(cls, form, **kwargs):
    return cls(num_classes=K, num_factors=R, form=form, num_samples=S, **kwargs)


def _labels(form, soft=False):
    if form == "sigmoid" or soft:
        return jax.nn.one_hot(INT_LABELS, K) * (0.7 if soft else 1.0) + (0.3 / K if soft else 0.0)
    return INT_LABELS


class OnePassHetHead(HetHead):
    """HET through the one-pass path too (it streams by default): the path is generic."""

    one_pass_mean = True


# S * K: one example's [S, K] logits fit the budget, so blocks of 1 per device (8 simulated
# devices in the tests): 2 blocks of the 16 examples. B * S * K: the whole batch is one block.
@pytest.mark.parametrize("budget", [S * K, B * S * K])
@pytest.mark.parametrize("form,soft", [("softmax", False), ("softmax", True), ("sigmoid", False)])
@pytest.mark.parametrize("kind,cls", [("het", OnePassHetHead), ("hetxl", HetXLHead)])
def test_mean_log_likelihood_equals_the_keyed_reference(kind, cls, form, soft, budget):
    head = _head(cls, form, chunk_elements=budget)
    labels = _labels(form, soft)
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, PHI, labels, key=KEY))

    def fused(params, phi):
        return head.apply(params, phi, labels, mode="mean_log_likelihood", key=KEY)

    def reference(params, phi):
        logits = materialised_keyed_noisy_logits(kind, params, phi, KEY, S)
        if form == "softmax" and soft:
            log_probs = jax.nn.log_softmax(logits, -1)
            per_sample = jnp.einsum("bsk,bk->bs", log_probs, labels)
            return (jax.nn.logsumexp(per_sample, 1) - jnp.log(S)).mean()
        return materialised_log_likelihood(form, logits, labels).mean()

    value, grads = jax.value_and_grad(fused, argnums=(0, 1))(params, PHI)
    want_value, want_grads = jax.value_and_grad(reference, argnums=(0, 1))(params, PHI)
    assert_same_value_and_grads(value, grads, want_value, want_grads)
    np.testing.assert_allclose(jax.jit(fused)(params, PHI), want_value, rtol=1e-5)


def test_mean_log_likelihood_streams_when_one_example_does_not_fit():
    # S * K = 60 logits per example > 50: the chunked path, the same draw as "log_likelihood".
    head = _head(HetXLHead, "softmax", chunk_elements=50, max_chunk=4)
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, PHI, INT_LABELS, key=KEY))
    mean = head.apply(params, PHI, INT_LABELS, mode="mean_log_likelihood", key=KEY)
    per_example = head.apply(params, PHI, INT_LABELS, key=KEY)
    np.testing.assert_allclose(mean, per_example.mean(), rtol=1e-6)
    het = _head(HetHead, "sigmoid", max_chunk=4)  # HET streams whatever the budget
    het_params = het.init(jax.random.PRNGKey(1), PHI, _labels("sigmoid"), key=KEY)
    np.testing.assert_allclose(
        het.apply(het_params, PHI, _labels("sigmoid"), mode="mean_log_likelihood", key=KEY),
        het.apply(het_params, PHI, _labels("sigmoid"), key=KEY).mean(),
        rtol=1e-6,
    )
    det = DetHead(num_classes=K)
    det_params = det.init(jax.random.PRNGKey(1), PHI, INT_LABELS)
    np.testing.assert_allclose(
        det.apply(det_params, PHI, INT_LABELS, mode="mean_log_likelihood"),
        det.apply(det_params, PHI, INT_LABELS).mean(),
        rtol=1e-6,
    )


def test_mean_log_likelihood_on_a_data_sharded_batch_equals_one_device():
    mesh = make_mesh({"data": 8})
    head = _head(HetXLHead, "softmax", chunk_elements=S * K)
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, PHI, INT_LABELS, key=KEY))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    phi, labels = jax.device_put(PHI, batch), jax.device_put(INT_LABELS, batch)

    def loss(params, phi, labels):
        return -head.apply(params, phi, labels, mode="mean_log_likelihood", key=KEY)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, phi, labels)
    want_value, want_grads = jax.value_and_grad(loss, argnums=(0, 1))(params, PHI, INT_LABELS)
    assert_same_value_and_grads(value, grads, want_value, want_grads)


def test_one_sample_modes_draw_the_same_noise_as_the_streamed_reference():
    head = HetXLHead(num_classes=K, num_factors=R, num_samples=1)
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, PHI, INT_LABELS, key=KEY))
    mean = head.apply(params, PHI, INT_LABELS, mode="mean_log_likelihood", key=KEY)
    per_example = head.apply(params, PHI, INT_LABELS, key=KEY)
    logits = materialised_noisy_logits("hetxl", params, PHI, KEY, 1, 1)
    want = materialised_log_likelihood("softmax", logits, INT_LABELS)
    np.testing.assert_allclose(per_example, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, want.mean(), rtol=1e-5, atol=1e-6)


def test_one_sample_hetxl_adds_the_noise_before_its_one_product():
    """At S = 1, (phi + eps') W + b: the reference's values and gradients, one [., K] product."""
    head = HetXLHead(num_classes=K, num_factors=R, num_samples=1)
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, PHI, INT_LABELS, key=KEY))

    def loss(params, phi):
        return -head.apply(params, phi, INT_LABELS, mode="mean_log_likelihood", key=KEY)

    def reference_loss(params, phi):
        logits = materialised_noisy_logits("hetxl", params, phi, KEY, 1, 1)
        return -materialised_log_likelihood("softmax", logits, INT_LABELS).mean()

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, PHI)
    want_value, want_grads = jax.value_and_grad(reference_loss, argnums=(0, 1))(params, PHI)
    assert_same_value_and_grads(value, grads, want_value, want_grads)
    # The forward pass's products with the [D, K] kernel: one (the locs' own is dead code).
    hlo = jax.jit(loss).lower(params, PHI).compile().as_text()
    class_products = [
        line for line in hlo.splitlines() if " dot(" in line and f",{K}]" in line.split("=")[1]
    ]
    assert len(class_products) == 1, class_products


@pytest.mark.parametrize("samples,folded", [(S, True), (FOLDED_BELOW_SAMPLES, False)])
def test_hetxl_softmax_block_with_and_without_the_noise_added_to_phi(samples, folded):
    """Below FOLDED_BELOW_SAMPLES the one-pass block adds the noise to phi before the product,
    from it on it adds locs after; both equal the keyed reference (values and gradients)."""
    head = HetXLHead(num_classes=K, num_factors=R, num_samples=samples)
    params = nn.meta.unbox(head.init({"params": jax.random.PRNGKey(1)}, PHI, INT_LABELS, key=KEY))

    def fused(params, phi):
        return head.apply(params, phi, INT_LABELS, mode="mean_log_likelihood", key=KEY)

    def reference(params, phi):
        logits = materialised_keyed_noisy_logits("hetxl", params, phi, KEY, samples)
        return materialised_log_likelihood("softmax", logits, INT_LABELS).mean()

    value, grads = jax.value_and_grad(fused, argnums=(0, 1))(params, PHI)
    want_value, want_grads = jax.value_and_grad(reference, argnums=(0, 1))(params, PHI)
    assert_same_value_and_grads(value, grads, want_value, want_grads)
    jaxpr = str(jax.make_jaxpr(fused)(params, PHI))
    assert ("_add_to_samples" in jaxpr) == folded  # phi + eps: only the folded block adds
    assert "projected_softmax_log_likelihood" in jaxpr
