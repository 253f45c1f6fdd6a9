"""The CPU kernels' library (towers/cpu_kernels.py): a second build of the kernels, registered
under a prefix, runs beside the first, and traces inside `calls_into` call it (what
benchmarks/kernel_ab.py compares revisions with)."""

import ctypes
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from towers import cpu_attention, cpu_kernels


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
