"""A dense layer's product on XLA:CPU with its weight gradient as a compiled kernel
(towers/cpu_dense.cc).

`dense_product(x, kernel)` is x [M, K] @ kernel [K, F] with a custom VJP: the input gradient
dy kernel^T is XLA's product, the weight gradient x^T dy [K, F] (which contracts the long token
axis M) is the kernel's. Why: XLA:CPU ran that product at 0.49-0.76 of the float32 matmul peak
at the towers' shapes on a 2-core Zen 4, the kernel at 0.83-0.92 (benchmarks/weight_gradient.py,
BENCHMARKS.md). Same values up to float32 rounding (the sum over M is taken in another order).

The kernel is compiled with the other CPU kernels (towers/cpu_kernels.py); where it cannot be
built, or with `HETCLIP_CPU_DENSE=0`, `available()` is False and the towers run XLA's product.
On a CPU without AVX-512 (its tiles are then 6 x 16 floats, towers/cpu_kernels.h) it runs only
where F <= K, unless `HETCLIP_CPU_DENSE=1`: on a 2-core Zen 3 (AVX2) the layers with F <= K
ran at 1.15-1.47x XLA's product and those with F > K (the MLP's first layer) at 0.79-1.00x
(benchmarks/weight_gradient.py, BENCHMARKS.md).

On a device mesh the weight gradient is partitioned by `custom_partitioning`: each device runs
the kernel on its rows, K and F keep their sharding, and the partial gradients of a sharded M
are summed over its mesh axes (an all-reduce, which is what XLA's own product does there).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from towers import cpu_kernels

SWITCH = "HETCLIP_CPU_DENSE"
LANES = 16  # the kernel's vector width in floats: F must be a multiple of it


def available() -> bool:
    """Whether the kernel runs in this process (`cpu_kernels.enabled`: switch, CPU, build)."""
    return cpu_kernels.enabled(SWITCH, needs_avx512=False)


def supports(x: jax.Array, kernel: jax.Array) -> bool:
    """The kernel's case: float32 x [M, K] (M > 0) and kernel [K, F] with F a multiple of 16, on
    the CPU; there F <= K unless the CPU has AVX-512 or `HETCLIP_CPU_DENSE=1` (module doc)."""
    return (
        x.ndim == kernel.ndim == 2
        and x.dtype == kernel.dtype == jnp.float32
        and x.shape[0] > 0
        and kernel.shape[1] % LANES == 0
        and jax.default_backend() == "cpu"
        and available()
        and (
            kernel.shape[1] <= kernel.shape[0]
            or cpu_kernels.tuned_cpu()
            or cpu_kernels.forced(SWITCH)
        )
    )


def _weight_gradient_call(x, grad):
    shape = jax.ShapeDtypeStruct((x.shape[1], grad.shape[1]), jnp.float32)
    return cpu_kernels.ffi_call("hetclip_weight_gradient", shape)(x, grad)


def _specs(mesh, x_shape, grad_shape) -> tuple[P, P, P]:
    """(x, grad, result) specs: the rows M sharded as x's are (on both operands), K as x's
    columns and F as grad's, each dropped where it would reuse a mesh axis taken before it; F
    also where a device's share of it would not be a multiple of 16 (the kernel's vectors)."""
    x_spec = (*getattr(x_shape.sharding, "spec", ()), None, None)
    grad_spec = (*getattr(grad_shape.sharding, "spec", ()), None, None)
    rows, used = x_spec[0], set(cpu_kernels.mesh_axes(x_spec[0]))
    depth = x_spec[1] if not used & set(cpu_kernels.mesh_axes(x_spec[1])) else None
    used |= set(cpu_kernels.mesh_axes(depth))
    features = grad_spec[1] if not used & set(cpu_kernels.mesh_axes(grad_spec[1])) else None
    shards = math.prod(mesh.shape[axis] for axis in cpu_kernels.mesh_axes(features))
    if grad_shape.shape[1] % (shards * LANES):
        features = None
    return P(rows, depth), P(rows, features), P(depth, features)


def _partition(mesh, arg_shapes, result_shape):
    x_spec, grad_spec, result_spec = _specs(mesh, *arg_shapes)
    summed = cpu_kernels.mesh_axes(x_spec[0])

    def lower(x, grad):
        partial = _weight_gradient_call(x, grad)
        return jax.lax.psum(partial, summed) if summed else partial

    operands = (NamedSharding(mesh, x_spec), NamedSharding(mesh, grad_spec))
    return mesh, lower, NamedSharding(mesh, result_spec), operands


def _infer(mesh, arg_shapes, result_shape):
    return NamedSharding(mesh, _specs(mesh, *arg_shapes)[2])


_weight_gradient = custom_partitioning(_weight_gradient_call)
_weight_gradient.def_partition(
    _partition,
    infer_sharding_from_operands=_infer,
    sharding_rule="m k, m f -> k f",
    reduction_factors=("m",),
)


def weight_gradient(x: jax.Array, grad: jax.Array) -> jax.Array:
    """x^T grad: float32 x [M, K], grad [M, F] (F a multiple of 16) -> [K, F], by the kernel
    (check `available` first)."""
    if not available():
        raise RuntimeError(
            f"the CPU dense kernel is not available (switched off by {SWITCH}=0, a CPU "
            f"without AVX-512 and {SWITCH} unset, or no C++ compiler); "
            "use towers.common.token_flat_dot_general, which falls back to XLA."
        )
    if x.ndim != 2 or grad.ndim != 2 or x.shape[0] != grad.shape[0] or grad.shape[1] % LANES:
        raise ValueError(
            f"weight_gradient needs x [M, K] and grad [M, F] with the same M and F a multiple of "
            f"{LANES}; got x {x.shape}, grad {grad.shape}."
        )
    return _weight_gradient(x, grad)


@jax.custom_vjp
def dense_product(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [M, K] @ kernel [K, F] -> [M, F], whose kernel gradient is the compiled weight
    gradient (check `supports` first)."""
    return x @ kernel


def _dense_product_forward(x, kernel):
    return x @ kernel, (x, kernel)


def _dense_product_backward(residuals, grad):
    x, kernel = residuals
    return grad @ kernel.T, weight_gradient(x, grad)


dense_product.defvjp(_dense_product_forward, _dense_product_backward)
