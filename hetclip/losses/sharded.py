"""Contrastive losses sharded over the batch axes of a mesh: the "local loss" that scales.

Each device holds B_l = B / N images and texts. It gathers the embeddings of the whole global
batch (all_gather; its transpose in the backward pass is a reduce-scatter, so gradients reach
the device that owns each example) and computes only its own blocks:
  softmax: local images x all texts (image->text rows) and local texts x all images
           (text->image rows), [B_l, B] each;
  sigmoid: local images x all texts, [B_l, B]: every pair exactly once.
Then the per-device sums are added (psum). The sigmoid losses can instead pass the texts around a
ring (`exchange="ring"`: N - 1 ppermute steps, one [B_l, B_l] block at a time), so no device
ever holds the global batch's texts: memory O(B_l^2) instead of O(B_l * B), the chunked sigmoid
loss big_vision and open_clip users ask for. Memory per device is O(B_l * B * C) whatever the
number of MC samples S; values and gradients equal the single-device losses
(tests/hetclip/losses/test_sharded.py checks this on 8 simulated devices).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from hetclip.heads import mc
from hetclip.losses import contrastive
from hetclip.losses.het_contrastive import (
    IMAGE_SIDE,
    TEXT_SIDE,
    NoiseParams,
    matched_row_log_probs,
    sigmoid_block_log_likelihood,
    softmax_direction_log_probs,
)


def _axis_index(axes: tuple[str, ...]) -> jax.Array:
    index = jnp.int32(0)
    for axis in axes:
        index = index * jax.lax.axis_size(axis) + jax.lax.axis_index(axis)
    return index


def _gather(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    return jax.lax.all_gather(x, axes, tiled=True)


def _columns(
    embeddings: jax.Array, noise: NoiseParams | None, local_ids: jax.Array, axes: tuple[str, ...]
) -> dict:
    """The column arguments of softmax_direction_log_probs for one side. Noisy columns stay
    local: each device draws its own examples' noise and the noisy [B_l, C, D] are gathered
    per chunk (col_axes), instead of every device drawing the whole global batch's noise.
    Plain columns are gathered once."""
    if noise is None:
        gathered = _gather(embeddings, axes)
        return dict(cols=gathered, col_noise=None, col_ids=jnp.arange(gathered.shape[0]))
    return dict(cols=embeddings, col_noise=noise, col_ids=local_ids, col_axes=axes)


def _ring_sum(axes: tuple[str, ...], local_block, block_fn):
    """sum_k block_fn(block_k, source_k) over the N blocks of the ring, starting with this
    device's own block; block k comes from device (me + k) mod N via k neighbour exchanges."""
    size = 1
    for axis in axes:
        size *= jax.lax.axis_size(axis)
    me = _axis_index(axes)
    total = block_fn(local_block, me)
    if size == 1:
        return total
    shift = [(j, (j - 1) % size) for j in range(size)]  # device j sends its block to j - 1

    def step(carry, k):
        block, total = carry
        block = jax.lax.ppermute(block, axes, perm=shift)
        return (block, total + block_fn(block, (me + k) % size)), None

    (_, total), _ = jax.lax.scan(step, (local_block, total), jnp.arange(1, size))
    return total


EXCHANGES = ("gather", "ring")


def _check_exchange(exchange: str) -> None:
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}.")


def _specs(batch: P, noise: NoiseParams | None):
    return None if noise is None else NoiseParams(P(), batch, batch)


def _batch_axes(mesh: Mesh, batch_axes: Sequence[str]) -> tuple[str, ...]:
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    if not axes:
        raise ValueError(
            f"None of the batch axes {tuple(batch_axes)} is in mesh {mesh.axis_names}."
        )
    return axes


def sharded_clip_loss(
    mesh: Mesh,
    image: jax.Array,
    text: jax.Array,
    log_scale: jax.Array,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    column_block: int | None = None,
) -> jax.Array:
    """CLIP softmax loss of a batch sharded over `batch_axes`; equals contrastive.clip_loss.

    column_block: visit the gathered batch that many columns at a time (running
    log-sum-exp), so a device holds [B_l, column_block] logits instead of [B_l, B]."""
    axes = _batch_axes(mesh, batch_axes)
    batch = P(axes)

    def local(image, text, log_scale):
        offset = _axis_index(axes) * image.shape[0]
        all_image, all_text = _gather(image, axes), _gather(text, axes)

        def direction(rows, cols):  # one "world": the deterministic embeddings
            return matched_row_log_probs(
                rows[:, None], cols[:, None], log_scale, offset, column_block
            )[0]

        total = direction(image, all_text).sum() + direction(text, all_image).sum()
        return -jax.lax.psum(total, axes) / (2 * all_image.shape[0])

    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P()), out_specs=P())(
        image, text, log_scale
    )


def sharded_siglip_loss(
    mesh: Mesh,
    image: jax.Array,
    text: jax.Array,
    log_scale: jax.Array,
    bias: jax.Array,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    exchange: str = "gather",
) -> jax.Array:
    """SigLIP sigmoid loss of a sharded batch; equals contrastive.siglip_loss.

    exchange: "gather" (all texts at once) or "ring" (one block of texts at a time)."""
    axes = _batch_axes(mesh, batch_axes)
    batch = P(axes)
    _check_exchange(exchange)

    def local(image, text, log_scale, bias):
        local_size = image.shape[0]
        me = _axis_index(axes)

        def block(texts, source):
            logits = contrastive.pairwise_logits(image, texts, log_scale) + bias
            return contrastive.sigmoid_pair_log_likelihood(logits, (me - source) * local_size)

        if exchange == "ring":
            total = _ring_sum(axes, text, block)
        else:  # all texts as one block that starts at global index 0
            total = block(_gather(text, axes), 0)
        global_size = local_size * jax.lax.psum(1, axes)
        return -jax.lax.psum(total, axes) / global_size

    return jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, P(), P()), out_specs=P())(
        image, text, log_scale, bias
    )


def sharded_hetxl_clip_loss(
    mesh: Mesh,
    image: jax.Array,
    text: jax.Array,
    log_scale: jax.Array,
    key: jax.Array,
    *,
    image_noise: NoiseParams | None,
    text_noise: NoiseParams | None = None,
    num_samples: int,
    max_chunk: int = 8,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    column_block: int | None = None,
) -> jax.Array:
    """HET-XL softmax contrastive loss of a sharded batch; equals hetxl_clip_loss.

    column_block: as in sharded_clip_loss; per device [C, B_l, column_block] logits at once."""
    axes = _batch_axes(mesh, batch_axes)
    batch = P(axes)
    chunk = mc.chunk_size_for(num_samples, max_chunk)

    def local(image, text, log_scale, key, image_noise, text_noise):
        local_size = image.shape[0]
        offset = _axis_index(axes) * local_size
        local_ids = offset + jnp.arange(local_size)
        common = dict(
            log_scale=log_scale,
            key=key,
            offset=offset,
            num_samples=num_samples,
            chunk_size=chunk,
            column_block=column_block,
        )
        image_to_text = softmax_direction_log_probs(
            image,
            row_noise=image_noise,
            row_ids=local_ids,
            row_side=IMAGE_SIDE,
            col_side=TEXT_SIDE,
            **_columns(text, text_noise, local_ids, axes),
            **common,
        )
        text_to_image = softmax_direction_log_probs(
            text,
            row_noise=text_noise,
            row_ids=local_ids,
            row_side=TEXT_SIDE,
            col_side=IMAGE_SIDE,
            **_columns(image, image_noise, local_ids, axes),
            **common,
        )
        total = jax.lax.psum(image_to_text.sum() + text_to_image.sum(), axes)
        return -total / (2 * local_size * jax.lax.psum(1, axes))

    in_specs = (batch, batch, P(), P(), _specs(batch, image_noise), _specs(batch, text_noise))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P())(
        image, text, log_scale, key, image_noise, text_noise
    )


def sharded_hetxl_siglip_loss(
    mesh: Mesh,
    image: jax.Array,
    text: jax.Array,
    log_scale: jax.Array,
    bias: jax.Array,
    key: jax.Array,
    *,
    image_noise: NoiseParams | None,
    text_noise: NoiseParams | None = None,
    num_samples: int,
    max_chunk: int = 8,
    batch_axes: Sequence[str] = ("data", "fsdp"),
    exchange: str = "gather",
) -> jax.Array:
    """HET-XL sigmoid contrastive loss of a sharded batch; equals hetxl_siglip_loss.

    exchange: "gather" (all texts at once) or "ring" (one block of texts at a time)."""
    axes = _batch_axes(mesh, batch_axes)
    batch = P(axes)
    chunk = mc.chunk_size_for(num_samples, max_chunk)
    _check_exchange(exchange)

    def local(image, text, log_scale, bias, key, image_noise, text_noise):
        local_size = image.shape[0]
        me = _axis_index(axes)

        def block(texts_and_noise, source):
            # Only per-example arrays travel the ring; the shared factors J stay put.
            texts, noise = texts_and_noise
            if noise is not None:
                noise = NoiseParams(text_noise.factors, *noise)
            return sigmoid_block_log_likelihood(
                image,
                texts,
                log_scale,
                bias,
                key,
                row_noise=image_noise,
                col_noise=noise,
                row_ids=me * local_size + jnp.arange(local_size),
                col_ids=source * local_size + jnp.arange(texts.shape[0]),
                offset=(me - source) * local_size,
                num_samples=num_samples,
                chunk_size=chunk,
            )

        per_example = None if text_noise is None else (text_noise.scale, text_noise.diag)
        if exchange == "ring":
            total = _ring_sum(axes, (text, per_example), block)
        else:  # all texts as one block that starts at global index 0
            total = block(
                (_gather(text, axes), jax.tree.map(lambda x: _gather(x, axes), per_example)), 0
            )
        global_size = local_size * jax.lax.psum(1, axes)
        return -jax.lax.psum(total, axes) / global_size

    in_specs = (batch, batch, P(), P(), P(), _specs(batch, image_noise), _specs(batch, text_noise))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P())(
        image, text, log_scale, bias, key, image_noise, text_noise
    )
