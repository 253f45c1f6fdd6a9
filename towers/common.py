"""Transformer pieces shared by the ViT and the text transformer, in big_vision's layout.

Parameter names follow big_vision (so .npz checkpoints load by name): Encoder1DBlock holds
LayerNorm_0, MultiHeadDotProductAttention_0/{query,key,value,out}, LayerNorm_1,
MlpBlock_0/{Dense_0,Dense_1}; the encoder stacks `encoderblock_{i}` (or one scanned
`encoderblock` with a leading layer axis) and ends with `encoder_norm`. LayerNorm epsilon is
1e-6 and GELU the tanh approximation (flax defaults), as in big_vision.
Every parameter carries logical axis names: embed, mlp, heads, kv, layers (scan).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from towers import cpu_attention, cpu_dense, cpu_layer_norm
from towers.bias_gelu import bias_gelu

Dtype = jnp.dtype


def logical(init: Callable, *names: str | None) -> Callable:
    return nn.with_logical_partitioning(init, names)


XAVIER = nn.initializers.xavier_uniform()


def token_flat_dot_general(
    lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None, preferred_element_type=None
) -> jax.Array:
    """lax.dot_general for a dense layer, computed as one 2-D product: activations [B, T, ..., C]
    contracted over their trailing axes C with a kernel [C, F] over its leading ones become
    [B*T*..., C] x [C, F] and are reshaped back to [B, T, ..., F]. Same values and gradients.

    Why: XLA:CPU gives the kernel gradient of a product over [B, T, C] activations (contracting
    B and T) a full transposed copy of the output gradient before the matmul; in 2-D it needs
    none. On the 2-core Xeon a layer's forward + backward got 1.06-1.59x faster and whole CLIP
    training steps 1.01-1.09x (`benchmarks/dense_layout.py`, BENCHMARKS.md). On a CPU, float32
    products get their kernel gradient from towers.cpu_dense's compiled kernel. Any other
    dot_general (batch axes, other contracting axes or pairings) is passed through unchanged."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    # Pairs in order: lhs axis ndim - n + i with kernel axis i (any other pairing passes).
    lhs_contract = tuple(a % lhs.ndim for a in lhs_contract)
    rhs_contract = tuple(a % rhs.ndim for a in rhs_contract)
    count = len(lhs_contract)
    dense = (
        not lhs_batch
        and not rhs_batch
        and lhs.ndim - count >= 2  # a plain [N, C] input is already 2-D
        and lhs_contract == tuple(range(lhs.ndim - count, lhs.ndim))
        and rhs_contract == tuple(range(count))
    )
    settings = dict(precision=precision, preferred_element_type=preferred_element_type)
    if not dense:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, **settings)
    leading, contracted, features = lhs.shape[:-count], rhs.shape[:count], rhs.shape[count:]
    size = math.prod(contracted)
    lhs, rhs = lhs.reshape(-1, size), rhs.reshape(size, -1)
    if precision is None and preferred_element_type is None and cpu_dense.supports(lhs, rhs):
        out = cpu_dense.dense_product(lhs, rhs)  # the weight gradient as a compiled kernel
    else:
        out = jax.lax.dot_general(lhs, rhs, (((1,), (0,)), ((), ())), **settings)
    return out.reshape(*leading, *features)


class BiasFreeDense(nn.Module):
    """A dense layer's parameters under flax Dense's names and shapes (`kernel` [C, F], `bias`
    [F]), applied without the bias: x [..., C] -> (x kernel [..., F], bias [F]) in `dtype`, so
    that the caller can fold the bias into the op that follows (MlpBlock: bias_gelu)."""

    features: int
    kernel_init: Callable = XAVIER
    bias_init: Callable = nn.initializers.zeros
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        product = token_flat_dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
        return product, bias


class MlpBlock(nn.Module):
    mlp_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """[B, N, D] -> [B, N, D]."""
        width = x.shape[-1]
        product, bias = BiasFreeDense(
            self.mlp_dim,
            kernel_init=logical(XAVIER, "embed", "mlp"),
            bias_init=logical(nn.initializers.normal(1e-6), "mlp"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="Dense_0",
        )(x)
        # nn.gelu(Dense_0(x)) with the bias folded into the GELU (why: towers/bias_gelu.py).
        x = bias_gelu(product, bias)
        x = nn.Dropout(self.dropout)(x, deterministic)
        return nn.Dense(
            width,
            kernel_init=logical(XAVIER, "mlp", "embed"),
            bias_init=logical(nn.initializers.normal(1e-6), "embed"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dot_general=token_flat_dot_general,
            name="Dense_1",
        )(x)


def attention_implementation(query: jax.Array, bias=None, mask=None) -> str | None:
    """ "cudnn" (cuDNN's fused flash attention) for unmasked 16-bit attention with head size
    <= 128 on a GPU, else None (XLA's attention, which JAX also picks by default everywhere)."""
    supported = (
        jax.default_backend() == "gpu"
        and bias is None
        and mask is None
        and query.dtype in (jnp.bfloat16, jnp.float16)
        and query.shape[-1] <= 128
        and query.shape[-1] % 8 == 0
    )
    return "cudnn" if supported else None


def fused_attention(query, key, value, bias=None, mask=None, dropout_rate=0.0, **unused):
    """softmax(q k^T / sqrt(d) + bias) v for q [B, Q, H, d], k / v [B, K, H, d] (Vaswani et al.
    2017, eq. 1): cuDNN's fused kernel where attention_implementation allows it (a GPU in
    bfloat16); on a CPU the compiled kernel of towers.cpu_attention for float32 attention
    without bias or mask, else per_head_attention; heads_major_attention elsewhere. No
    attention dropout (no tower uses it)."""
    if dropout_rate:
        raise ValueError("fused_attention has no attention dropout; set dropout_rate=0.")
    if attention_implementation(query, bias, mask) == "cudnn":
        try:
            return padded_attention(query, key, value, "cudnn")
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # this cuDNN / GPU cannot run the shape: the XLA attention below does
    if jax.default_backend() == "cpu":
        if cpu_attention.supports(query, key, value, bias, mask):
            return cpu_attention.attention(query, key, value)
        return per_head_attention(query, key, value, bias, mask)
    return heads_major_attention(query, key, value, bias, mask)


def heads_major_attention(query, key, value, bias=None, mask=None) -> jax.Array:
    """The same attention as XLA's jax.nn.dot_product_attention (float32 logits and softmax,
    masked logits set to -0.7 * float32's max), with q, k, v moved to [B, H, T, d] first, so
    every product is a plain batched matmul over leading axes. What fused_attention runs off
    the CPU where cuDNN does not apply (on an H100 as fast as XLA's own attention). On a 2-core
    CPU it was 1.4-1.6x faster than XLA's attention forward and backward at a ViT-S/16 block's
    shape (batch 64, 197 tokens, 6 heads of 64; per_head_attention is faster still there).
    bias / mask broadcast to [B, H, Q, K] logits; returns [B, Q, H, d]."""
    scale = jnp.asarray(query.shape[-1] ** -0.5, query.dtype)
    query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query * scale, key, value))
    logits = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    probs = _attention_weights(logits, bias, mask).astype(value.dtype)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", probs, value), 1, 2)


def per_head_attention(query, key, value, bias=None, mask=None) -> jax.Array:
    """heads_major_attention's computation with every head a chain of its own: head h's
    [B, T, d] slices of q, k, v are read from the [B, T, H, d] layout, its [B, Q, K] weights
    computed, and the H outputs stacked back into [B, Q, H, d]. XLA:CPU runs one batched
    product on one thread; H independent chains give its executor work for both cores, and no
    [B, H, T, d] copies are made. Forward + backward on a 2-core Xeon: 0.86x heads_major's time
    at the tiny CLIP's image attention (batch 256, 65 tokens, 3 heads), 0.89x at ViT-S/16's
    (batch 64, 197 tokens, 6 heads), 1.13x at 32 text tokens; whole steps 1.06-1.18x faster
    (tiny CLIP) and 0.96-1.21x (ViT-S/16) in A/Bs (BENCHMARKS.md). bias / mask broadcast to
    [B, H, Q, K] logits; returns [B, Q, H, d]."""
    scale = jnp.asarray(query.shape[-1] ** -0.5, query.dtype)
    query = query * scale
    outputs = []
    for head in range(query.shape[2]):
        logits = jnp.einsum(
            "bqd,bkd->bqk",
            query[:, :, head],
            key[:, :, head],
            preferred_element_type=jnp.float32,
        )
        weights = _attention_weights(logits, _head_slice(bias, head), _head_slice(mask, head))
        outputs.append(jnp.einsum("bqk,bkd->bqd", weights.astype(value.dtype), value[:, :, head]))
    return jnp.stack(outputs, axis=2)


def _head_slice(x, head: int):
    """Head `head`'s part of a bias / mask that broadcasts to [B, H, Q, K]: [B or 1, Q or 1,
    K or 1] (a broadcast head axis is shared by every head)."""
    if x is None:
        return None
    x = jnp.asarray(x)
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return x[:, head if x.shape[1] > 1 else 0]


def _attention_weights(logits: jax.Array, bias, mask) -> jax.Array:
    """float32 softmax over the last (key) axis of logits + bias, masked keys at -0.7 * float32's
    max (XLA's convention: a query that sees no key gets uniform weights)."""
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, -0.7 * jnp.finfo(jnp.float32).max)
    return jax.nn.softmax(logits, axis=-1)


def padded_attention(query, key, value, implementation: str, multiple: int = 64) -> jax.Array:
    """Unmasked attention computed on sequences zero-padded to a multiple of `multiple`, padded
    keys masked out (key_value_seq_lengths) and padded queries cut from the output [B, Q, H, d].
    cuDNN's flash kernels reject some lengths (a ViT-B/16's 197 tokens) and run 256 padded
    tokens 2.2x faster than XLA runs 197 on an H100 (BENCHMARKS.md)."""

    def pad(x):
        return jnp.pad(x, [(0, 0), (0, -x.shape[1] % multiple), (0, 0), (0, 0)])

    padded_query = pad(query)
    batch = query.shape[0]
    out = jax.nn.dot_product_attention(
        padded_query,
        pad(key),
        pad(value),
        query_seq_lengths=jnp.full((batch,), padded_query.shape[1], jnp.int32),
        key_value_seq_lengths=jnp.full((batch,), key.shape[1], jnp.int32),
        implementation=implementation,
    )
    return out[:, : query.shape[1]]


def attention(num_heads: int, dtype: Dtype, param_dtype: Dtype) -> nn.MultiHeadDotProductAttention:
    return nn.MultiHeadDotProductAttention(
        num_heads=num_heads,
        attention_fn=fused_attention,
        kernel_init=logical(XAVIER, "embed", "heads", "kv"),
        bias_init=logical(nn.initializers.zeros, "heads", "kv"),
        out_kernel_init=logical(XAVIER, "heads", "kv", "embed"),
        out_bias_init=logical(nn.initializers.zeros, "embed"),
        qkv_dot_general=token_flat_dot_general,
        out_dot_general=token_flat_dot_general,
        dtype=dtype,
        param_dtype=param_dtype,
    )


class LayerNorm(nn.LayerNorm):
    """flax's LayerNorm (same parameters, names and options) that runs the compiled CPU kernels
    (towers/cpu_layer_norm.py) where they apply: float32 input, parameters and computation,
    scale and bias on, no mask, features a multiple of 16, on a CPU. Elsewhere, flax's."""

    @nn.compact
    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        features = jax.ShapeDtypeStruct(x.shape[-1:], self.param_dtype)
        kernel = (
            mask is None
            and self.use_scale
            and self.use_bias
            and self.reduction_axes == -1
            and self.feature_axes == -1
            and self.axis_name is None
            and self.dtype in (None, jnp.float32)
            and cpu_layer_norm.supports(x, features, features)
        )
        if not kernel:
            return super().__call__(x, mask=mask)
        scale = self.param("scale", self.scale_init, features.shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, features.shape, self.param_dtype)
        return cpu_layer_norm.layer_norm(x, scale, bias, self.epsilon)


def layer_norm(dtype: Dtype, param_dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    return LayerNorm(
        epsilon=1e-6,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        scale_init=logical(nn.initializers.ones, "embed"),
        bias_init=logical(nn.initializers.zeros, "embed"),
    )


class Encoder1DBlock(nn.Module):
    """Pre-LN transformer block. Returns (x, None) so it can be used with nn.scan."""

    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True):
        y = layer_norm(self.dtype, self.param_dtype)(x)
        y = attention(self.num_heads, self.dtype, self.param_dtype)(y, y, deterministic=True)
        y = nn.Dropout(self.dropout)(y, deterministic)
        x = x + y
        y = layer_norm(self.dtype, self.param_dtype)(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, self.param_dtype)(y, deterministic)
        y = nn.Dropout(self.dropout)(y, deterministic)
        return x + y, None


class Encoder(nn.Module):
    """A stack of Encoder1DBlocks plus the final LayerNorm (`encoder_norm`).

    Attributes:
      scan: one `encoderblock` scanned over a leading layer axis (compiles once, for deep
        models) instead of `encoderblock_{i}`; same outputs.
      remat: recompute each block's activations in the backward pass (activation memory of one
        block instead of all).
    """

    depth: int
    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    scan: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        block = Encoder1DBlock
        if self.remat:
            block = nn.remat(block, prevent_cse=not self.scan, static_argnums=(2,))
        settings = dict(
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            dropout=self.dropout,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.scan:
            stack = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=self.depth,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stack(name="encoderblock", **settings)(x, deterministic)
        else:
            for layer in range(self.depth):
                x, _ = block(name=f"encoderblock_{layer}", **settings)(x, deterministic)
        return layer_norm(self.dtype, self.param_dtype, name="encoder_norm")(x)


class MAPHead(nn.Module):
    """Multihead attention pooling: a learned probe attends over the tokens, then an MLP."""

    num_heads: int
    mlp_dim: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, N, D] -> [B, D]."""
        batch, _, width = x.shape
        probe = self.param(
            "probe", logical(XAVIER, None, None, "embed"), (1, 1, width), self.param_dtype
        )
        probe = jnp.tile(probe, (batch, 1, 1)).astype(self.dtype)
        x = attention(self.num_heads, self.dtype, self.param_dtype)(probe, x)
        y = layer_norm(self.dtype, self.param_dtype)(x)
        x = x + MlpBlock(self.mlp_dim or 4 * width, dtype=self.dtype, param_dtype=self.param_dtype)(
            y
        )
        return x[:, 0]


def add_learned_positions(module: nn.Module, x: jax.Array, param_dtype: Dtype) -> jax.Array:
    """x [B, N, D] + the module's `pos_embedding` [1, N, D] (normal, stddev 1/sqrt(D))."""
    _, length, width = x.shape
    pos = module.param(
        "pos_embedding",
        logical(nn.initializers.normal(stddev=1 / width**0.5), None, None, "embed"),
        (1, length, width),
        param_dtype,
    )
    return x + pos.astype(x.dtype)


def projection_head(features: int, zero_init: bool, dtype: Dtype, param_dtype: Dtype) -> nn.Dense:
    """The optional final projection, named `head` as in big_vision."""
    init = nn.initializers.zeros if zero_init else XAVIER
    return nn.Dense(
        features,
        name="head",
        kernel_init=logical(init, "embed", None),
        bias_init=logical(nn.initializers.zeros, None),
        dtype=dtype,
        param_dtype=param_dtype,
    )
