"""The compiled LayerNorm kernels (towers/cpu_layer_norm.cc) compute flax's LayerNorm: values
and gradients (input, scale, bias) at the towers' shapes and at awkward ones, on one device and
sharded over a mesh; towers.common's LayerNorm uses them only where they apply and keeps
flax's parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from towers import common, cpu_layer_norm

pytestmark = pytest.mark.usefixtures("kernels_on_any_cpu")


def _arrays(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=1.5, scale=3.0, size=shape).astype(np.float32)
    scale, bias = rng.normal(size=(2, shape[-1])).astype(np.float32)
    weights = rng.normal(size=shape).astype(np.float32)  # a loss that weighs every output
    return (jnp.asarray(a) for a in (x, scale, bias, weights))


def _flax(x, scale, bias):
    return nn.LayerNorm(epsilon=1e-6).apply({"params": {"scale": scale, "bias": bias}}, x)


def _kernel(x, scale, bias):
    return cpu_layer_norm.layer_norm(x, scale, bias, 1e-6)


def _gradients(norm, weights):
    loss = lambda x, s, b: jnp.sum(jnp.sin(norm(x, s, b)) * weights)  # noqa: E731
    return jax.grad(loss, argnums=(0, 1, 2))


@pytest.mark.parametrize(
    "shape",
    [
        (3, 65, 192),  # the tiny CLIP's image tower
        (2, 32, 256),  # its text tower
        (1, 16),  # one row of one vector
        (130, 48),  # rows over several tasks (64 rows each) and thread parts
        (2, 3, 5, 768),  # several leading axes
    ],
)
def test_kernels_equal_flax_values_and_gradients(shape):
    x, scale, bias, weights = _arrays(len(shape) + shape[-1], shape)
    ours = jax.jit(_kernel)(x, scale, bias)
    assert ours.shape == x.shape and ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, _flax(x, scale, bias), rtol=1e-5, atol=2e-5)
    got = jax.jit(_gradients(_kernel, weights))(x, scale, bias)
    want = _gradients(_flax, weights)(x, scale, bias)
    for g, w in zip(got, want, strict=True):
        assert float(jnp.abs(g).max()) > 0
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))


def _runs_kernel(module, x) -> bool:
    params = module.init(jax.random.PRNGKey(0), x)
    # A fresh function each time: jit would reuse an earlier trace of the same one.
    text = jax.jit(lambda p, x: module.apply(p, x)).lower(params, x).as_text()
    return "hetclip_layer_norm_forward" in text


def test_the_towers_layer_norm_keeps_flax_parameters_and_runs_the_kernel_where_it_applies():
    x, *_ = _arrays(0, (2, 5, 32))
    module = common.layer_norm(jnp.float32, jnp.float32)
    params = module.init(jax.random.PRNGKey(0), x)
    flax_params = nn.LayerNorm(epsilon=1e-6).init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, nn.unbox(params)) == jax.tree.map(jnp.shape, flax_params)
    np.testing.assert_allclose(
        module.apply(params, x), _flax(x, jnp.ones(32), jnp.zeros(32)), rtol=1e-5, atol=1e-5
    )
    assert _runs_kernel(module, x)
    assert not _runs_kernel(module, x[..., :24])  # 24 features: not whole vectors
    assert not _runs_kernel(common.layer_norm(jnp.bfloat16, jnp.float32), x)
    assert not _runs_kernel(module, x.astype(jnp.bfloat16))


def test_layer_norm_names_bad_shapes():
    x, scale, bias, _ = _arrays(0, (4, 32))
    with pytest.raises(ValueError, match="multiple of 16"):
        cpu_layer_norm.layer_norm(x[:, :20], scale[:20], bias[:20], 1e-6)
    with pytest.raises(ValueError, match=r"scale, bias \[D\]"):
        cpu_layer_norm.layer_norm(x, scale[:16], bias, 1e-6)


def test_switch_turns_the_kernels_off(monkeypatch):
    x, *_ = _arrays(0, (2, 5, 32))
    monkeypatch.setenv(cpu_layer_norm.SWITCH, "0")
    assert not cpu_layer_norm.available()
    assert not _runs_kernel(common.layer_norm(jnp.float32, jnp.float32), x)
    with pytest.raises(RuntimeError, match=cpu_layer_norm.SWITCH):
        _kernel(*list(_arrays(0, (2, 32)))[:3])


@pytest.mark.parametrize(
    "spec",
    [
        P("data", None, None),  # rows split: scale and bias gradients summed over devices
        P(("data", "model"), None, None),
        P("data", None, "model"),  # features split too: gathered for the kernel
        P(None, None, None),
    ],
)
def test_sharded_kernels_equal_one_device(spec):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    x, scale, bias, weights = _arrays(5, (8, 6, 32))
    x_sharded = jax.device_put(x, NamedSharding(mesh, spec))
    step = jax.jit(_gradients(_kernel, weights))
    got = step(x_sharded, scale, bias)
    want = _gradients(_flax, weights)(x, scale, bias)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))
    compiled = step.lower(x_sharded, scale, bias).compile().as_text()
    assert "hetclip_layer_norm_backward" in compiled
