"""Loss and gradients of one global batch, optionally in micro-batches (gradient caching).

Contrastive losses couple every example with every other, so summing micro-batch gradients
would change the loss (fewer negatives). Gradient caching (Gao et al., 2021, "GradCache")
keeps it exact:
  1. encode every micro-batch without gradients, concatenate the representations r [B, ...];
  2. the loss over the full batch gives dL/dr and the gradient of the parameters the loss
     reads directly (logit scale, bias, noise factors, heads);
  3. re-encode each micro-batch and pull its slice of dL/dr back through the towers (VJP);
     the sum over micro-batches plus step 2's direct gradient is the full-batch gradient.
Peak activation memory is that of one micro-batch; the cost is one extra tower forward.

Micro-batch m takes the m-th slice of EVERY data shard's examples, so splitting and merging
never moves examples between devices, and the merged order is the original batch order (noise
keyed by global example index stays the same).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetclip.train.objectives import Objective


def split_micro(tree, num_micro: int, num_shards: int):
    """[B, ...] leaves -> [M, B / M, ...]; micro m holds slice m of each of the shards."""

    def split(x):
        batch = x.shape[0]
        if batch % (num_micro * num_shards):
            raise ValueError(
                f"Global batch {batch} must divide into {num_micro} micro-batches on each of "
                f"{num_shards} data shards; change train.accum_steps or input.batch_size."
            )
        local = batch // num_shards // num_micro
        x = x.reshape(num_shards, num_micro, local, *x.shape[1:]).swapaxes(0, 1)
        return x.reshape(num_micro, num_shards * local, *x.shape[3:])

    return jax.tree.map(split, tree)


def merge_micro(tree, num_shards: int):
    """Inverse of split_micro: [M, B / M, ...] -> [B, ...] in the original order."""

    def merge(x):
        num_micro, size = x.shape[:2]
        local = size // num_shards
        x = x.reshape(num_micro, num_shards, local, *x.shape[2:]).swapaxes(0, 1)
        return x.reshape(num_micro * size, *x.shape[3:])

    return jax.tree.map(merge, tree)


def loss_and_grads(
    objective: Objective,
    params,
    batch: dict[str, jax.Array],
    dropout_key: jax.Array,
    noise_key: jax.Array,
    *,
    accum_steps: int = 1,
    num_shards: int = 1,
):
    """((loss, metrics), grads) of the full batch; equal for every accum_steps up to float error."""

    def full_loss(p):
        reps = objective.encode(p, batch, dropout_key)
        return objective.loss(p, reps, batch, noise_key)

    if accum_steps == 1:
        return jax.value_and_grad(full_loss, has_aux=True)(params)

    micro = split_micro(batch, accum_steps, num_shards)
    keys = jax.random.split(dropout_key, accum_steps)

    def encode_micro(xs):
        x, key = xs
        return objective.encode(jax.lax.stop_gradient(params), x, key)

    reps = merge_micro(jax.lax.map(encode_micro, (micro, keys)), num_shards)
    (value, metrics), (direct_grads, rep_grads) = jax.value_and_grad(
        objective.loss, argnums=(0, 1), has_aux=True
    )(params, reps, batch, noise_key)
    rep_grads = split_micro(rep_grads, accum_steps, num_shards)

    def backprop_micro(total, xs):
        x, key, cotangent = xs
        _, pull = jax.vjp(lambda p: objective.encode(p, x, key), params)
        return jax.tree.map(jnp.add, total, pull(cotangent)[0]), None

    tower_grads, _ = jax.lax.scan(
        backprop_micro, jax.tree.map(jnp.zeros_like, params), (micro, keys, rep_grads)
    )
    return (value, metrics), jax.tree.map(jnp.add, direct_grads, tower_grads)
