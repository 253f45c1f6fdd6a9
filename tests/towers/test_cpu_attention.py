"""The compiled CPU attention kernel (towers/cpu_attention.cc) computes XLA's attention: values
and gradients at the shapes the towers use and at awkward ones, on one device and sharded over
a mesh; without a compiler the towers fall back to XLA's attention with a warning."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from towers import common, cpu_attention, cpu_kernels

pytestmark = pytest.mark.usefixtures("kernels_on_any_cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inputs(seed, batch, queries, keys, heads, depth):
    rng = np.random.default_rng(seed)
    shapes = [(batch, queries, heads, depth), (batch, keys, heads, depth)]
    q, k, v = (rng.normal(size=shapes[min(i, 1)]).astype(np.float32) for i in range(3))
    weights = rng.normal(size=shapes[0]).astype(np.float32)  # a loss that weighs every output
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(weights)


def _loss(attend, weights):
    return lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v)) * weights)


def test_the_kernel_builds_and_loads_on_this_machine():
    # The towers' CPU speed depends on it: a machine without a working compiler would fall back
    # silently but for a warning, so CI (which has one) must see the kernel run.
    assert cpu_kernels.compiler() is not None
    assert cpu_attention.available()
    library = cpu_kernels.library_path(cpu_kernels.compiler())
    assert library.exists() and library.stat().st_size > 0


@pytest.mark.parametrize(
    "batch,queries,keys,heads,depth",
    [
        (3, 65, 65, 3, 64),  # the tiny CLIP's image attention (64 patches + class token)
        (2, 32, 32, 4, 64),  # its text attention
        (2, 197, 197, 2, 64),  # a ViT-S/16 block: 208 padded keys, three column tiles
        (2, 11, 90, 2, 32),  # 96 padded keys: one column tile of 6 vectors, in 4-row blocks
        (2, 1, 50, 2, 64),  # a MAP head's probe
        (2, 7, 9, 3, 20),  # head size not a multiple of 16, Q != K, odd lengths
        (1, 17, 33, 1, 16),
    ],
)
def test_kernel_equals_xla_attention_values_and_gradients(batch, queries, keys, heads, depth):
    q, k, v, weights = _inputs(batch * queries + depth, batch, queries, keys, heads, depth)
    ours = jax.jit(cpu_attention.attention)(q, k, v)
    theirs = jax.nn.dot_product_attention(q, k, v)
    assert ours.shape == q.shape and ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    got = jax.jit(jax.grad(_loss(cpu_attention.attention, weights), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(_loss(jax.nn.dot_product_attention, weights), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want, strict=True):
        assert float(jnp.abs(g).max()) > 0
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_fused_attention_runs_the_kernel_only_where_it_applies():
    q, k, v, _ = _inputs(0, 2, 5, 5, 2, 16)

    def targets(fn, *args):
        # A fresh function each time: jit would reuse an earlier trace of fn itself.
        text = jax.jit(lambda *a: fn(*a)).lower(*args).as_text()
        return "hetclip_attention_forward" in text

    assert targets(common.fused_attention, q, k, v)
    mask = jnp.ones((2, 1, 5, 5), bool)
    assert not targets(lambda *a: common.fused_attention(*a, mask=mask), q, k, v)
    assert not targets(common.fused_attention, *(x.astype(jnp.bfloat16) for x in (q, k, v)))
    with cpu_kernels.disabled():  # what benchmarks use so that XLA can count the FLOPs
        assert not cpu_attention.available()
        assert not targets(common.fused_attention, q, k, v)
    assert cpu_attention.available()


def test_kernel_names_mismatched_shapes():
    q, k, v, _ = _inputs(0, 2, 5, 6, 2, 16)
    with pytest.raises(ValueError, match=r"k, v \[B, K, H, d\].*q \(2, 5, 2, 16\)"):
        cpu_attention.attention(q, k[:, :, :1], v[:, :, :1])


@pytest.mark.parametrize("spec", [P("data", None, "model"), P(("data", "model")), P(None, "data")])
def test_sharded_kernel_equals_one_device_and_keeps_batch_and_head_sharding(spec):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    q, k, v, weights = _inputs(1, 8, 12, 12, 4, 16)
    sharding = NamedSharding(mesh, spec)
    sharded = [jax.device_put(x, sharding) for x in (q, k, v)]
    step = jax.jit(jax.value_and_grad(_loss(common.fused_attention, weights), argnums=(0, 1, 2)))
    value, grads = step(*sharded)
    want_value, want_grads = jax.value_and_grad(
        _loss(jax.nn.dot_product_attention, weights), argnums=(0, 1, 2)
    )(q, k, v)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    compiled = step.lower(*sharded).compile().as_text()
    assert "hetclip_attention_forward_with_probs" in compiled
    assert "hetclip_attention_backward" in compiled
    # Batch and heads are split among the devices; only a sharded token axis is gathered.
    assert ("all-gather" in compiled) == (spec == P(None, "data"))


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


FALLBACK_CHECK = """
    import warnings
    import jax, jax.numpy as jnp, numpy as np
    from towers import common, cpu_attention, cpu_kernels
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 5, 2, 16)) for i in range(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = common.fused_attention(q, k, v)
    assert not cpu_attention.available()
    assert "hetclip_attention" not in jax.jit(common.fused_attention).lower(q, k, v).as_text()
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v), atol=1e-5)
    print("WARNINGS:", [str(w.message) for w in caught])
"""


def test_without_a_compiler_attention_falls_back_with_a_warning(tmp_path):
    result = _run(
        FALLBACK_CHECK,
        CXX=str(tmp_path / "no-such-compiler"),
        HETCLIP_KERNEL_CACHE=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    assert "no C++ compiler found (set CXX or install g++)" in result.stdout


def test_a_failing_build_falls_back_with_the_compilers_message(tmp_path):
    broken = tmp_path / "broken-c++"
    broken.write_text("#!/bin/sh\necho 'compiler says no' >&2\nexit 1\n")
    broken.chmod(0o755)
    result = _run(FALLBACK_CHECK, CXX=str(broken), HETCLIP_KERNEL_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "could not be built or loaded" in result.stdout
    assert "compiler says no" in result.stdout
    assert not list((tmp_path / "cache").glob("*.so"))  # no half-written library left behind


def test_switch_turns_the_kernel_off():
    result = _run(
        "from towers import cpu_attention; print(cpu_attention.available())",
        HETCLIP_CPU_ATTENTION="0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
