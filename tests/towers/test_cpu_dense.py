"""The compiled weight-gradient kernel (towers/cpu_dense.cc) computes x^T dy as XLA does: alone,
inside dense_product's gradient and the towers' dense layers, at awkward shapes (K not a
multiple of the 6-row tile, F of 1 to 5 vectors, M over several chunks and thread parts), and
sharded over a mesh; the towers use it only where it applies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from towers import common, cpu_dense, cpu_kernels

pytestmark = pytest.mark.usefixtures("kernels_on_any_cpu")


def _arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=shape).astype(np.float32)) for shape in shapes]


def _loss(product):
    return lambda x, w: jnp.sum(jnp.sin(product(x, w)))


@pytest.mark.parametrize(
    "rows,depth,features",
    [
        (1500, 20, 48),  # 3 row tiles of 6 and one of 2, 3 vectors, several chunks and parts
        (7, 13, 80),  # fewer rows than a chunk; 5 vectors: a 4-vector tile and a 1-vector one
        (2049, 64, 16),  # one vector; a part boundary inside a chunk
        (513, 6, 32),
        # K >= 512: chunks of x packed; 87 row tiles, the last of 4; the last chunk partial
        (1100, 520, 32),
    ],
)
def test_weight_gradient_equals_x_transposed_times_grad(rows, depth, features):
    x, grad = _arrays(rows + depth, (rows, depth), (rows, features))
    got = jax.jit(cpu_dense.weight_gradient)(x, grad)
    want = np.asarray(x, np.float64).T @ np.asarray(grad, np.float64)
    assert got.shape == (depth, features) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(rows))


def test_dense_product_gradients_equal_xlas():
    x, w = _arrays(0, (700, 24), (24, 64))
    got = jax.jit(jax.grad(_loss(cpu_dense.dense_product), argnums=(0, 1)))(x, w)
    want = jax.grad(_loss(lambda x, w: x @ w), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(cpu_dense.dense_product(x, w), x @ w, rtol=1e-6)
    for g, w_ in zip(got, want, strict=True):
        assert float(jnp.abs(g).max()) > 0
        np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4)


def test_weight_gradient_names_bad_shapes():
    x, grad = _arrays(0, (8, 4), (8, 20))
    with pytest.raises(ValueError, match=r"F a multiple of 16; got x \(8, 4\), grad \(8, 20\)"):
        cpu_dense.weight_gradient(x, grad)
    with pytest.raises(ValueError, match="the same M"):
        cpu_dense.weight_gradient(x, grad[:4, :16])


def test_dense_layers_run_the_kernel_only_where_it_applies():
    x, w = _arrays(1, (2, 5, 8), (8, 32))

    def uses_kernel(x, w):
        # A fresh function each time: jit would reuse an earlier trace.
        dims = (((2,), (0,)), ((), ()))
        grad = jax.grad(lambda x, w: jnp.sum(common.token_flat_dot_general(x, w, dims)), 1)
        return "hetclip_weight_gradient" in jax.jit(lambda *a: grad(*a)).lower(x, w).as_text()

    assert uses_kernel(x, w)
    assert not uses_kernel(x, w[:, :20])  # F not a multiple of 16
    assert not uses_kernel(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    with cpu_kernels.disabled():
        assert not uses_kernel(x, w)


def test_a_tower_block_trains_with_the_kernel_as_with_xla():
    block = common.Encoder1DBlock(mlp_dim=64, num_heads=2)
    (x,) = _arrays(2, (3, 9, 32))
    params = block.init(jax.random.PRNGKey(0), x)

    def grads():
        loss = lambda p: jnp.sum(jnp.sin(block.apply(p, x)[0]))  # noqa: E731
        return jax.jit(jax.grad(loss)).lower(params).compile(), loss

    compiled, _ = grads()
    assert "hetclip_weight_gradient" in compiled.as_text()
    with cpu_kernels.disabled():
        reference, _ = grads()
    assert "hetclip_weight_gradient" not in reference.as_text()
    got, want = compiled(params), reference(params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "x_spec,w_spec",
    [
        (P("data", None), P(None, "model")),  # rows split: partial gradients summed
        (P(("data", "model"), None), P(None, None)),
        (P("data", "model"), P("model", None)),  # K split as well
        (P(None, None), P(None, "model")),  # F split, rows whole: no sum
        (P(None, None), P(None, "data")),  # F = 32 in 4 shares of 8: gathered for the kernel
    ],
)
def test_sharded_weight_gradient_equals_one_device(x_spec, w_spec):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    x, w = _arrays(3, (64, 24), (24, 32))
    x_sharded = jax.device_put(x, NamedSharding(mesh, x_spec))
    w_sharded = jax.device_put(w, NamedSharding(mesh, w_spec))
    step = jax.jit(jax.grad(_loss(cpu_dense.dense_product), argnums=(0, 1)))
    got = step(x_sharded, w_sharded)
    want = jax.grad(_loss(lambda x, w: x @ w), argnums=(0, 1))(x, w)
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4)
    compiled = step.lower(x_sharded, w_sharded).compile().as_text()
    assert "hetclip_weight_gradient" in compiled
