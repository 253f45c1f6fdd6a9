"""bias_gelu equals flax's nn.gelu of the biased product, in value and gradient, and keeps only
the product and the bias for its backward pass; MlpBlock built on it equals the Dense -> GELU ->
Dense reference with the same parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from towers.bias_gelu import bias_gelu
from towers.common import MlpBlock


def reference(product, bias):
    return nn.gelu(product + bias)  # flax's default: the tanh approximation


@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 12)])
def test_values_and_gradients_equal_flax_gelu_of_the_biased_product(shape):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    # Spread over GELU's bend and both tails (tanh saturates past |x| ~ 5).
    product = 4 * jax.random.normal(keys[0], shape)
    bias = jax.random.normal(keys[1], shape[-1:])
    cotangent = jax.random.normal(keys[2], shape)
    np.testing.assert_allclose(bias_gelu(product, bias), reference(product, bias), rtol=1e-6)
    ours = jax.vjp(bias_gelu, product, bias)[1](cotangent)
    theirs = jax.vjp(reference, product, bias)[1](cotangent)
    for got, want in zip(ours, theirs, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert float(jnp.abs(ours[1]).sum()) > 0  # the bias gradient is not trivially zero


def test_bfloat16_keeps_its_dtype_and_stays_close_to_float32():
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    product = 3 * jax.random.normal(keys[0], (64, 16))
    bias = jax.random.normal(keys[1], (16,))
    cotangent = jax.random.normal(keys[2], (64, 16))
    low = [x.astype(jnp.bfloat16) for x in (product, bias, cotangent)]
    out, vjp = jax.vjp(bias_gelu, *low[:2])
    grad_product, grad_bias = vjp(low[2])
    assert out.dtype == grad_product.dtype == grad_bias.dtype == jnp.bfloat16
    want_product, want_bias = jax.vjp(reference, product, bias)[1](cotangent)
    # bfloat16 keeps 8 bits of mantissa: the inputs' rounding alone moves results by ~1%.
    close = dict(rtol=2e-2, atol=0.05)
    np.testing.assert_allclose(out.astype(jnp.float32), reference(product, bias), **close)
    np.testing.assert_allclose(grad_product.astype(jnp.float32), want_product, **close)
    # The bias gradient sums 64 rows in float32, then rounds once to bfloat16.
    np.testing.assert_allclose(grad_bias.astype(jnp.float32), want_bias, **close)


def test_backward_pass_keeps_only_the_product_and_the_bias():
    product, bias = jnp.ones((4, 5, 8)), jnp.zeros(8)
    kept = [x.shape for x in jax.tree.leaves(jax.vjp(bias_gelu, product, bias)[1])]
    assert kept == [(4, 5, 8), (8,)]
    # Differentiated as written, the same function keeps activation-sized arrays of its own.
    written = jax.tree.leaves(jax.vjp(reference, product, bias)[1])
    assert sum(x.size for x in written) > product.size + bias.size


class ReferenceMlp(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim, name="Dense_0")(x))
        return nn.Dense(x.shape[-1], name="Dense_1")(y)


def test_mlp_block_equals_dense_gelu_dense_with_the_same_parameters():
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 6))
    block = MlpBlock(mlp_dim=10)
    params = nn.unbox(block.init(jax.random.PRNGKey(3), x)["params"])
    # big_vision's names and shapes, so checkpoints load into the same tree.
    shapes = jax.tree.map(lambda p: p.shape, params)
    assert shapes == {
        "Dense_0": {"kernel": (6, 10), "bias": (10,)},
        "Dense_1": {"kernel": (10, 6), "bias": (6,)},
    }
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-trivial bias

    def loss(module, p):
        return jnp.sum(jnp.sin(module.apply({"params": p}, x)))

    np.testing.assert_allclose(
        block.apply({"params": params}, x),
        ReferenceMlp(10).apply({"params": params}, x),
        rtol=1e-5,
        atol=1e-6,
    )
    ours = jax.grad(lambda p: loss(block, p))(params)
    theirs = jax.grad(lambda p: loss(ReferenceMlp(10), p))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ours, theirs)
