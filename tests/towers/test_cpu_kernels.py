"""The CPU kernels' library (towers/cpu_kernels.py): a second build of the kernels, registered
under a prefix, runs beside the first, and traces inside `calls_into` call it (what
benchmarks/kernel_ab.py compares revisions with); the switches and the CPU's AVX-512 decide
which kernels the towers run."""

import ctypes
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from towers import common, cpu_attention, cpu_dense, cpu_kernels, cpu_layer_norm

pytestmark = pytest.mark.usefixtures("kernels_on_any_cpu")


def _lowered(q, k, v) -> str:
    # A fresh function each time: jit would reuse an earlier trace of a function it has seen.
    return jax.jit(lambda *a: cpu_attention.attention(*a)).lower(q, k, v).as_text()


def test_a_second_build_under_a_prefix_runs_inside_calls_into(tmp_path):
    assert cpu_kernels.library() is not None
    sources = []
    for file in (*cpu_kernels.SOURCES, *cpu_kernels.HEADERS):
        shutil.copy(file, tmp_path / file.name)
        if file in cpu_kernels.SOURCES:
            sources.append(tmp_path / file.name)
    library = tmp_path / "second.so"
    cpu_kernels.build(cpu_kernels.compiler(), library, tuple(sources))
    cpu_kernels.register(ctypes.cdll.LoadLibrary(str(library)), "second_")

    q, k, v = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 9, 2, 16))
    assert "second_hetclip_attention" not in _lowered(q, k, v)
    with cpu_kernels.calls_into("second_"):
        inside = _lowered(q, k, v)
        second = jax.jit(lambda *a: cpu_attention.attention(*a))(q, k, v)
    assert "second_hetclip_attention_forward" in inside
    assert "second_hetclip_attention" not in _lowered(q, k, v)  # the block has closed
    first = jax.jit(lambda *a: cpu_attention.attention(*a))(q, k, v)
    np.testing.assert_array_equal(np.asarray(second), np.asarray(first))
    np.testing.assert_allclose(first, jax.nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(first).max()) > 0


AVX2_ONLY = "flags : fpu sse sse2 avx fma avx2"
AVX512 = AVX2_ONLY + " avx512f avx512bw"


@pytest.mark.parametrize(
    "features,setting,attention_on,dense_on,wide_dense_on,layer_norm_on",
    [
        (AVX512, None, True, True, True, True),
        # AVX2: attention made a step slower, the weight gradient of F > K layers ran below XLA
        (AVX2_ONLY, None, False, True, False, True),
        (AVX2_ONLY, "1", True, True, True, True),  # forced on
        (AVX512, "0", False, False, False, False),  # forced off
    ],
)
def test_the_switches_and_the_cpu_pick_the_kernels(
    monkeypatch, features, setting, attention_on, dense_on, wide_dense_on, layer_norm_on
):
    assert cpu_kernels.library() is not None
    monkeypatch.setattr(cpu_kernels, "_cpu_features", lambda: features)
    for switch in (cpu_attention.SWITCH, cpu_dense.SWITCH, cpu_layer_norm.SWITCH):
        if setting is None:
            monkeypatch.delenv(switch, raising=False)
        else:
            monkeypatch.setenv(switch, setting)
    assert cpu_kernels.tuned_cpu() == ("avx512f" in features)
    available = (cpu_attention.available(), cpu_dense.available(), cpu_layer_norm.available())
    assert available == (attention_on, dense_on, layer_norm_on)
    # What a tower's dense layer then runs for its weight gradient (fresh traces): kernel
    # [K, F] with F <= K, and with F > K.
    dims = (((2,), (0,)), ((), ()))
    grad = jax.grad(lambda x, w: jnp.sum(common.token_flat_dot_general(x, w, dims)), 1)
    for depth, features_out, expected in [(32, 16, dense_on), (8, 32, wide_dense_on)]:
        x, w = jnp.ones((2, 5, depth)), jnp.ones((depth, features_out))
        lowered = jax.jit(lambda *a: grad(*a)).lower(x, w)
        assert ("hetclip_weight_gradient" in lowered.as_text()) == expected, (depth, features_out)
