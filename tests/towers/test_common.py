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


@pytest.mark.parametrize("implementation", ["heads_major_attention", "per_head_attention"])
@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_xla_attentions_equal_jax_attention_with_bias_and_mask(implementation, dtype, tolerance):
    import towers.common

    attention = getattr(towers.common, implementation)
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

    # Per-head bias [1, H, Q, K]; a key-padding mask shared by the heads [B, 1, Q, K]; and a
    # [Q, K] mask of lower rank, broadcast over batch and heads (a causal mask).
    causal = np.tril(np.ones((5, 7), bool))
    cases = [(None, None), (bias, None), (None, mask), (bias, mask), (None, causal)]
    for b, m in cases:
        ours = functools.partial(attention, bias=b, mask=m)
        theirs = functools.partial(jax.nn.dot_product_attention, bias=b, mask=m)
        assert ours(query, key, value).dtype == dtype
        np.testing.assert_allclose(
            np.asarray(ours(query, key, value), np.float32),
            np.asarray(theirs(query, key, value), np.float32),
            atol=tolerance,
        )
        got = jax.grad(loss(ours), argnums=(0, 1, 2))(query, key, value)
        assert not np.allclose(np.asarray(got[0], np.float32), 0)
        want = jax.grad(loss(theirs), argnums=(0, 1, 2))(query, key, value)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(
                np.asarray(g, np.float32), np.asarray(w, np.float32), atol=tolerance
            )


def _dense_cases():
    """(lhs shape, rhs shape, dimension numbers, computed as a 2-D product) of the products flax's
    Dense / DenseGeneral layers make, and some the flat path must leave alone."""
    none = ((), ())
    return [
        ((4, 6, 5), (5, 7), (((2,), (0,)), none), True),  # MlpBlock Dense on [B, T, C]
        ((4, 6, 5), (5, 3, 2), (((2,), (0,)), none), True),  # query/key/value to [B, T, H, d]
        ((4, 6, 3, 2), (3, 2, 5), (((2, 3), (0, 1)), none), True),  # out projection
        ((4, 5), (5, 7), (((1,), (0,)), none), True),  # already 2-D: passed through
        ((4, 6, 5), (7, 5), (((2,), (1,)), none), False),  # kernel contracted on its last axis
        ((4, 6, 5), (4, 5, 7), (((2,), (1,)), ((0,), (0,))), False),  # batch axes
        ((4, 6, 3, 3), (3, 3, 5), (((3, 2), (0, 1)), none), False),  # crossed pairing
    ]


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims,flat", _dense_cases())
def test_token_flat_dot_general_equals_lax_values_and_gradients(lhs_shape, rhs_shape, dims, flat):
    from towers.common import token_flat_dot_general

    rng = jax.random.split(jax.random.PRNGKey(3), 2)
    lhs = jax.random.normal(rng[0], lhs_shape)
    rhs = jax.random.normal(rng[1], rhs_shape)

    def loss(dot_general):
        return lambda a, b: jnp.sum(jnp.sin(dot_general(a, b, dims)))

    ours = token_flat_dot_general(lhs, rhs, dims)
    np.testing.assert_allclose(ours, jax.lax.dot_general(lhs, rhs, dims), rtol=1e-5, atol=1e-5)
    got = jax.grad(loss(token_flat_dot_general), argnums=(0, 1))(lhs, rhs)
    want = jax.grad(loss(jax.lax.dot_general), argnums=(0, 1))(lhs, rhs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # The 2-D path is the point: its product is one [N, C] x [C, F] matmul, whose kernel
    # gradient XLA:CPU computes without first copying the output gradient transposed.
    jaxpr = jax.make_jaxpr(functools.partial(token_flat_dot_general, dimension_numbers=dims))
    products = [e for e in jaxpr(lhs, rhs).eqns if e.primitive.name == "dot_general"]
    assert len(products) == 1
    ranks = [v.aval.ndim for v in products[0].invars]
    assert (ranks == [2, 2]) == flat


@pytest.mark.usefixtures("kernels_on_any_cpu")
def test_towers_dense_layers_use_the_flat_product_and_keep_big_vision_names():
    from towers.common import Encoder1DBlock

    block = Encoder1DBlock(mlp_dim=8, num_heads=2)
    x = jnp.ones((2, 3, 4))
    params = block.init(jax.random.PRNGKey(0), x)["params"]
    shapes = jax.tree.map(lambda p: p.shape, nn.unbox(params))
    assert shapes["MultiHeadDotProductAttention_0"]["query"]["kernel"] == (4, 2, 2)
    assert shapes["MultiHeadDotProductAttention_0"]["out"]["kernel"] == (2, 2, 4)
    assert shapes["MlpBlock_0"]["Dense_0"]["kernel"] == (4, 8)
    # Every product of the block's projections is 2-D ([B*T, C] x [C, F]); attention's own
    # products are, on this CPU, inside the compiled kernel's custom call, or, without it, two
    # [B, T, d] products per head (per_head_attention).
    from towers import cpu_attention, cpu_kernels

    def products_and_calls():
        jaxpr = jax.make_jaxpr(lambda p: block.apply({"params": p}, x))(params)
        eqns = list(_all_eqns(jaxpr.jaxpr))
        ranks = sorted(
            tuple(v.aval.ndim for v in e.invars) for e in eqns if e.primitive.name == "dot_general"
        )
        return ranks, sum(e.primitive.name == "ffi_call" for e in eqns)

    assert cpu_attention.available()
    ranks, calls = products_and_calls()
    assert ranks == [(2, 2)] * 6 and calls == 1, (ranks, calls)  # query ... Dense_1; attention
    with cpu_kernels.disabled():
        ranks, calls = products_and_calls()
    assert ranks.count((2, 2)) == 6 and calls == 0
    assert ranks.count((3, 3)) == 2 * block.num_heads, ranks
    assert len(ranks) == 6 + 2 * block.num_heads, ranks


def _all_eqns(jaxpr):
    """The equations of a jaxpr and of every jaxpr nested in its equations' parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for inner in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(inner, "jaxpr", inner)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _all_eqns(inner)
