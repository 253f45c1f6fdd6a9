"""The attention the towers use equals flax's reference dot-product attention; cuDNN's fused
kernel is picked only where it applies."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from towers.common import fused_attention


def test_fused_attention_equals_flax_reference_with_and_without_mask():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    query = jax.random.normal(keys[0], (2, 5, 3, 8))
    key = jax.random.normal(keys[1], (2, 7, 3, 8))
    value = jax.random.normal(keys[2], (2, 7, 3, 8))
    mask = np.ones((2, 1, 5, 7), bool)
    mask[1, :, :, 4:] = False  # the second example's last three keys are padding
    for m in (None, mask):
        np.testing.assert_allclose(
            fused_attention(query, key, value, mask=m),
            nn.dot_product_attention(query, key, value, mask=m),
            rtol=1e-5,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="dropout"):
        fused_attention(query, key, value, dropout_rate=0.1)


def test_attention_implementation_picks_cudnn_only_for_unmasked_16_bit_gpu_attention(monkeypatch):
    import towers.common as common

    bf16 = jnp.zeros((2, 5, 2, 64), jnp.bfloat16)
    assert common.attention_implementation(bf16) is None  # this CPU
    monkeypatch.setattr(common.jax, "default_backend", lambda: "gpu")
    assert common.attention_implementation(bf16) == "cudnn"
    assert common.attention_implementation(bf16.astype(jnp.float32)) is None
    assert common.attention_implementation(bf16, mask=jnp.ones((5, 5), bool)) is None
    assert common.attention_implementation(jnp.zeros((2, 5, 2, 256), jnp.bfloat16)) is None
    # Where cuDNN cannot run (here: none is installed), XLA's attention gives the result.
    query, key, value = (
        jax.random.normal(jax.random.PRNGKey(i), (2, 5, 2, 64)).astype(jnp.bfloat16)
        for i in range(3)
    )
    np.testing.assert_allclose(
        np.asarray(common.fused_attention(query, key, value), np.float32),
        np.asarray(nn.dot_product_attention(query, key, value), np.float32),
        atol=2e-2,
    )


@pytest.mark.parametrize("queries,keys", [(197, 197), (1, 196), (64, 64)])
def test_padded_attention_equals_unpadded_values_and_gradients(queries, keys):
    from towers.common import padded_attention

    rng = jax.random.split(jax.random.PRNGKey(1), 3)
    query = jax.random.normal(rng[0], (2, queries, 3, 8))
    key = jax.random.normal(rng[1], (2, keys, 3, 8))
    value = jax.random.normal(rng[2], (2, keys, 3, 8))

    def loss(attend):
        return lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v)))

    padded = lambda q, k, v: padded_attention(q, k, v, "xla")  # noqa: E731
    assert padded(query, key, value).shape == query.shape
    np.testing.assert_allclose(
        padded(query, key, value), nn.dot_product_attention(query, key, value), atol=1e-5
    )
    grads = jax.grad(loss(padded), argnums=(0, 1, 2))(query, key, value)
    expected = jax.grad(loss(nn.dot_product_attention), argnums=(0, 1, 2))(query, key, value)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_heads_major_attention_equals_jax_attention_with_bias_and_mask(dtype, tolerance):
    from towers.common import heads_major_attention

    rng = jax.random.split(jax.random.PRNGKey(2), 4)
    query = jax.random.normal(rng[0], (2, 5, 3, 8)).astype(dtype)
    key = jax.random.normal(rng[1], (2, 7, 3, 8)).astype(dtype)
    value = jax.random.normal(rng[2], (2, 7, 3, 8)).astype(dtype)
    bias = jax.random.normal(rng[3], (1, 3, 5, 7)).astype(dtype)
    mask = np.ones((2, 1, 5, 7), bool)
    mask[0, :, :, 5:] = False
    mask[1, :, 2, :] = False  # a query that sees no key at all: uniform weights in both

    def loss(attend):
        return lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v).astype(jnp.float32)))

    for b, m in [(None, None), (bias, None), (None, mask), (bias, mask)]:
        ours = functools.partial(heads_major_attention, bias=b, mask=m)
        theirs = functools.partial(jax.nn.dot_product_attention, bias=b, mask=m)
        assert ours(query, key, value).dtype == dtype
        np.testing.assert_allclose(
            np.asarray(ours(query, key, value), np.float32),
            np.asarray(theirs(query, key, value), np.float32),
            atol=tolerance,
        )
        got = jax.grad(loss(ours), argnums=(0, 1, 2))(query, key, value)
        want = jax.grad(loss(theirs), argnums=(0, 1, 2))(query, key, value)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(
                np.asarray(g, np.float32), np.asarray(w, np.float32), atol=tolerance
            )
