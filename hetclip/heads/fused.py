"""A weighted sum of per-example terms with its gradient taken in the same pass, a block at a time.

Why: the streamed MC likelihood (hetclip.heads.mc) draws samples chunk-major ([B, C, K] for all
examples at once). Each example's MC weights exp(t_s - logsumexp_s t_s) are only known after the
last chunk, so its backward pass recomputes every chunk: four passes of the B*S*D*K product
(forward, recompute, two gradients). Drawing all S samples of a few examples at once instead
("row-major") makes those weights exact inside the block, so the gradient can be taken there and
then: three passes. That needs the cotangent of each example's term in advance, which a loss
has: the mean over examples. So `weighted_sum` returns the scalar sum_b w_b f_b with fixed
weights w [B]; its forward pass computes the gradients too (one jax.vjp per block) and its
backward pass only scales them by the incoming cotangent.

`block_fn(shared, per_example, aux) -> [b]` computes the terms of one block of examples:
`shared` is a pytree of arrays every example uses (a classifier kernel), `per_example` and `aux`
pytrees whose leaves have a leading [B] axis (aux: integer labels, noise keys; no gradient).
Memory: one block's intermediates plus the gradients, whatever B is.

Blocks are laid out [block, num_blocks] (example b = i * num_blocks + j is row i of block j):
when the batch axis is split over devices, each device then holds whole rows and works on its
own examples in every block, so `block` should be a multiple of the number of batch shards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from hetclip.heads import mc

BlockFn = Callable[[Any, Any, Any], jax.Array]


def examples_per_block(batch: int, per_device: int, devices: int) -> int:
    """The block size for `weighted_sum`: `per_device` examples on each of `devices` devices
    (fewer if that does not divide `batch`); at least 1."""
    per_device = max(1, per_device)
    if batch % devices == 0:
        return devices * mc.chunk_size_for(batch // devices, per_device)
    return mc.chunk_size_for(batch, per_device)


def _blocks(tree, block: int):
    """Leaves [B, ...] -> [num_blocks, block, ...] in the strided layout of the docstring."""
    return jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(block, x.shape[0] // block, *x.shape[1:]), 0, 1), tree
    )


def _unblock(tree):
    """Inverse of `_blocks`."""
    return jax.tree.map(
        lambda x: jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree
    )


def _check(per_example, block: int) -> None:
    batch = jax.tree.leaves(per_example)[0].shape[0]
    if batch % block:
        raise ValueError(f"examples_per_block {block} does not divide the batch {batch}.")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def weighted_sum(
    block_fn: BlockFn, shared, per_example, aux, weights: jax.Array, block: int
) -> jax.Array:
    """Scalar sum_b weights[b] * f_b, f = block_fn over blocks of `block` examples.

    weights [B]: the loss's fixed weighting (e.g. 1/B); their gradient is f itself."""
    _check(per_example, block)

    def body(total, xs):
        example_block, aux_block, weight_block = xs
        return total + jnp.sum(weight_block * block_fn(shared, example_block, aux_block)), None

    xs = _blocks((per_example, aux, weights), block)
    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)
    return total


def _weighted_sum_fwd(block_fn, shared, per_example, aux, weights, block):
    _check(per_example, block)

    def body(carry, xs):
        total, shared_grads = carry
        example_block, aux_block, weight_block = xs
        values, vjp = jax.vjp(lambda s, e: block_fn(s, e, aux_block), shared, example_block)
        grads, example_grads = vjp(weight_block.astype(values.dtype))
        # Accumulated in float32 whatever the parameters' dtype: many blocks add up.
        shared_grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), shared_grads, grads)
        return (total + jnp.sum(weight_block * values), shared_grads), (values, example_grads)

    zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), shared)
    xs = _blocks((per_example, aux, weights), block)
    (total, shared_grads), (values, example_grads) = jax.lax.scan(
        body, (jnp.zeros((), jnp.float32), zeros), xs
    )
    shared_grads = jax.tree.map(lambda g, x: g.astype(jnp.result_type(x)), shared_grads, shared)
    residuals = (shared_grads, _unblock(example_grads), aux, _unblock(values))
    return total, residuals


def _weighted_sum_bwd(block_fn, block, residuals, cotangent):
    del block_fn, block
    shared_grads, example_grads, aux, values = residuals
    scale = functools.partial(jax.tree.map, lambda g: (g * cotangent).astype(g.dtype))
    aux_zeros = jax.tree.map(mc.zero_cotangent, aux)
    return scale(shared_grads), scale(example_grads), aux_zeros, scale(values)


weighted_sum.defvjp(_weighted_sum_fwd, _weighted_sum_bwd)
