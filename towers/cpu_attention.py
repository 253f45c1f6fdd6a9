"""Multi-head attention on XLA:CPU as compiled kernels (towers/cpu_attention.cc).

softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1) for float32 q [B, Q, H, d] and k / v
[B, K, H, d], without bias or mask, forward and backward each one XLA typed-FFI custom call.
Why: XLA:CPU runs each of attention's small batched products on one thread; the kernel runs
every (example, head) pair's products from the core's caches and spreads the pairs over XLA's
intra-op threads (forward + backward 2.4x faster than `per_head_attention` at the tiny CLIP's
image attention on a 2-core Xeon; BENCHMARKS.md).

The kernel is compiled at first use with the other CPU kernels (towers/cpu_kernels.py: cache,
compiler, fallback). Where it cannot be built, or on a CPU without AVX-512, `available()` is
False and the towers run XLA's attention, with the same values. `HETCLIP_CPU_ATTENTION=0` turns
the kernel off, `=1` on on any CPU.

On a device mesh the calls are partitioned by `custom_partitioning`: batch and head axes keep
their sharding, the token and head-size axes are gathered (they are never sharded by the
towers' rules).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from towers import cpu_kernels

SWITCH = "HETCLIP_CPU_ATTENTION"


def available() -> bool:
    """Whether the kernel runs in this process (`cpu_kernels.enabled`: switch, CPU, build)."""
    return cpu_kernels.enabled(SWITCH)


def supports(query, key, value, bias=None, mask=None) -> bool:
    """The kernel's case: non-empty float32 [B, T, H, d] operands, no bias or mask, on the
    CPU."""
    return (
        bias is None
        and mask is None
        and all(x.ndim == 4 and x.dtype == jnp.float32 and x.size for x in (query, key, value))
        and jax.default_backend() == "cpu"
        and available()
    )


def _scale(query) -> np.float32:
    return np.float32(query.shape[-1] ** -0.5)


def _probs_shape(query, key) -> tuple[int, int, int, int]:
    batch, queries, heads, _ = query.shape
    return batch, heads, queries, key.shape[1]


def _forward_call(query, key, value):
    return tuple(
        cpu_kernels.ffi_call("hetclip_attention_forward", cpu_kernels.float32_shapes(query.shape))(
            query, key, value, scale=_scale(query)
        )
    )


def _forward_with_probs_call(query, key, value):
    shapes = cpu_kernels.float32_shapes(query.shape, _probs_shape(query, key))
    return tuple(
        cpu_kernels.ffi_call("hetclip_attention_forward_with_probs", shapes)(
            query, key, value, scale=_scale(query)
        )
    )


def _backward_call(query, key, value, probs, grad_out):
    shapes = cpu_kernels.float32_shapes(query.shape, key.shape, value.shape)
    return tuple(
        cpu_kernels.ffi_call("hetclip_attention_backward", shapes)(
            query, key, value, probs, grad_out, scale=_scale(query)
        )
    )


# Factors of each array (Shardy's einsum-like rule): b batch, h heads, q / k query / key tokens,
# d head size. Token arrays are [B, T, H, d], probabilities [B, H, Q, K].
QUERY, KEY, PROBS = "b q h d", "b k h d", "b h q k"


def _partitioned(call, operands: tuple[str, ...], results: tuple[str, ...]):
    """`call` under custom_partitioning: each device runs it on its own shard, the batch and head
    axes sharded as the query is, token and head-size axes gathered where they are sharded."""

    def shardings(mesh, arrays: tuple[str, ...], query_sharding) -> tuple[NamedSharding, ...]:
        spec = tuple(getattr(query_sharding, "spec", ())) + (None,) * 4
        axes = {"b": spec[0], "h": spec[2]}
        return tuple(
            NamedSharding(mesh, P(*(axes.get(f) for f in factors.split()))) for factors in arrays
        )

    def partition(mesh, arg_shapes, result_shape):
        query_sharding = arg_shapes[0].sharding
        return (
            mesh,
            call,
            shardings(mesh, results, query_sharding),
            shardings(mesh, operands, query_sharding),
        )

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, results, arg_shapes[0].sharding)

    wrapped = custom_partitioning(call)
    wrapped.def_partition(
        partition,
        infer_sharding_from_operands=infer,
        sharding_rule=f"{', '.join(operands)} -> {', '.join(results)}",
        need_replication_factors=("q", "d", "k"),  # in order of first appearance
    )
    return wrapped


_forward = _partitioned(_forward_call, (QUERY, KEY, KEY), (QUERY,))
_forward_with_probs = _partitioned(_forward_with_probs_call, (QUERY, KEY, KEY), (QUERY, PROBS))
_backward = _partitioned(_backward_call, (QUERY, KEY, KEY, PROBS, QUERY), (QUERY, KEY, KEY))


@jax.custom_vjp
def _attention(query, key, value):
    return _forward(query, key, value)[0]


def _attention_forward(query, key, value):
    out, probs = _forward_with_probs(query, key, value)
    return out, (query, key, value, probs)


def _attention_backward(residuals, grad_out):
    return _backward(*residuals, grad_out)


_attention.defvjp(_attention_forward, _attention_backward)


def attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v for float32 q [B, Q, H, d], k / v [B, K, H, d] -> [B, Q, H, d]
    (check `supports` first). The backward pass reads the forward's probabilities [B, H, Q, K]
    (kept as a residual, as XLA's attention keeps them)."""
    if not available():
        raise RuntimeError(
            f"the CPU attention kernel is not available (switched off by {SWITCH}=0, a CPU "
            f"without AVX-512 and {SWITCH} unset, or no C++ compiler); "
            "call towers.common.fused_attention, which falls back to XLA's attention."
        )
    batch, _, heads, depth = query.shape
    if key.shape != value.shape or (key.shape[0], *key.shape[2:]) != (batch, heads, depth):
        raise ValueError(
            f"attention needs q [B, Q, H, d] and k, v [B, K, H, d] of the same B, H and d; got "
            f"q {query.shape}, k {key.shape}, v {value.shape}."
        )
    return _attention(query, key, value)
