"""LayerNorm on XLA:CPU as compiled kernels (towers/cpu_layer_norm.cc).

`layer_norm(x, scale, bias, epsilon)` normalises x [..., D] over its last axis (Ba et al. 2016):
(x - mean) / sqrt(var + epsilon) * scale + bias, forward and backward each one XLA typed-FFI
custom call over the rows x [M, D]. Why: XLA:CPU runs LayerNorm's backward as several passes
over the activations; the kernels read each row once per pass (BENCHMARKS.md). The variance is
taken from the centred values (flax's default takes E[x^2] - mean^2): the same values up to
float32 rounding.

Compiled with the other CPU kernels (towers/cpu_kernels.py), and used on any CPU (no product
tiles: on AVX2 too they ran 1.15-1.66x flax's); where they cannot be built, or
`HETCLIP_CPU_LAYER_NORM=0`, `available()` is False and towers.common's LayerNorm runs flax's.

On a device mesh the calls are partitioned by `custom_partitioning`: the rows keep their
sharding, the feature axis D is gathered, and the scale and bias gradients, summed over each
device's rows, are summed over the rows' mesh axes (an all-reduce, as XLA's own sum does).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from towers import cpu_kernels

SWITCH = "HETCLIP_CPU_LAYER_NORM"
LANES = 16  # the kernels' vector width in floats: D must be a multiple of it


def available() -> bool:
    """Whether the kernels run in this process (`cpu_kernels.enabled`: switch, build)."""
    return cpu_kernels.enabled(SWITCH, needs_avx512=False)


def supports(x, scale, bias) -> bool:
    """The kernels' case: float32 x [..., D] (D a multiple of 16, at least one row) with float32
    scale and bias [D], on the CPU (arrays or anything with their shape and dtype)."""
    return (
        len(x.shape) >= 1
        and math.prod(x.shape) > 0
        and x.dtype == scale.dtype == bias.dtype == jnp.float32
        and x.shape[-1] % LANES == 0
        and scale.shape == bias.shape == (x.shape[-1],)
        and jax.default_backend() == "cpu"
        and available()
    )


def _forward_call(x, scale, bias, epsilon):
    shapes = cpu_kernels.float32_shapes(x.shape, x.shape[:1], x.shape[:1])  # y, mean, rstd
    call = cpu_kernels.ffi_call("hetclip_layer_norm_forward", shapes)
    return tuple(call(x, scale, bias, epsilon=np.float32(epsilon)))


def _backward_call(x, scale, mean, rstd, grad):
    shapes = cpu_kernels.float32_shapes(x.shape, x.shape[1:], x.shape[1:])  # dx, dscale, dbias
    call = cpu_kernels.ffi_call("hetclip_layer_norm_backward", shapes)
    return tuple(call(x, scale, mean, rstd, grad))


def _row_axes(arg_shapes) -> tuple:
    """The mesh axes x's rows are sharded over (x [M, D] is the first operand)."""
    return cpu_kernels.mesh_axes((*getattr(arg_shapes[0].sharding, "spec", ()), None)[0])


def _forward_infer(epsilon, mesh, arg_shapes, result_shape):
    """y [M, D], mean and rstd [M]: sharded over the rows as x is, D whole."""
    axes = _row_axes(arg_shapes) or None
    return (
        NamedSharding(mesh, P(axes, None)),
        NamedSharding(mesh, P(axes)),
        NamedSharding(mesh, P(axes)),
    )


def _forward_partition(epsilon, mesh, arg_shapes, result_shape):
    results = _forward_infer(epsilon, mesh, arg_shapes, result_shape)
    replicated = NamedSharding(mesh, P(None))

    def lower(x, scale, bias):
        return _forward_call(x, scale, bias, epsilon)

    return mesh, lower, results, (results[0], replicated, replicated)


def _backward_infer(mesh, arg_shapes, result_shape):
    """dx [M, D] sharded over the rows as x is; dscale, dbias [D] replicated."""
    replicated = NamedSharding(mesh, P(None))
    return NamedSharding(mesh, P(_row_axes(arg_shapes) or None, None)), replicated, replicated


def _backward_partition(mesh, arg_shapes, result_shape):
    axes = _row_axes(arg_shapes)
    results = _backward_infer(mesh, arg_shapes, result_shape)
    rows, replicated = results[0], results[1]
    vector = NamedSharding(mesh, P(axes or None))

    def lower(x, scale, mean, rstd, grad):
        dx, dscale, dbias = _backward_call(x, scale, mean, rstd, grad)
        if axes:  # each device summed its own rows
            dscale, dbias = jax.lax.psum((dscale, dbias), axes)
        return dx, dscale, dbias

    return mesh, lower, results, (rows, replicated, vector, vector, rows)


@functools.cache
def _forward(epsilon: float):
    def forward(x, scale, bias):
        return _forward_call(x, scale, bias, epsilon)

    call = custom_partitioning(forward)
    call.def_partition(
        functools.partial(_forward_partition, epsilon),
        infer_sharding_from_operands=functools.partial(_forward_infer, epsilon),
        sharding_rule="m d, d, d -> m d, m, m",
        need_replication_factors=("d",),
    )
    return call


_backward = custom_partitioning(_backward_call)
_backward.def_partition(
    _backward_partition,
    infer_sharding_from_operands=_backward_infer,
    sharding_rule="m d, d, m, m, m d -> m d, d, d",
    need_replication_factors=("d",),
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, epsilon):
    return _forward(epsilon)(x, scale, bias)[0]


def _layer_norm_forward(x, scale, bias, epsilon):
    y, mean, rstd = _forward(epsilon)(x, scale, bias)
    return y, (x, scale, mean, rstd)


def _layer_norm_backward(epsilon, residuals, grad):
    return _backward(*residuals, grad)


_layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """LayerNorm of float32 x [..., D] over D with scale, bias [D] -> [..., D], by the kernels
    (check `supports` first)."""
    if not available():
        raise RuntimeError(
            f"the CPU LayerNorm kernels are not available (switched off by {SWITCH}=0, or no "
            "C++ compiler); use towers.common.layer_norm, which falls back to flax's."
        )
    if not (x.ndim >= 1 and x.shape[-1] % LANES == 0 and scale.shape == bias.shape == x.shape[-1:]):
        raise ValueError(
            f"layer_norm needs x [..., D] with D a multiple of {LANES} and scale, bias [D]; got "
            f"x {x.shape}, scale {scale.shape}, bias {bias.shape}."
        )
    rows = math.prod(x.shape[:-1])
    return _layer_norm(x.reshape(rows, x.shape[-1]), scale, bias, float(epsilon)).reshape(x.shape)
