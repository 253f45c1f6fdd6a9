"""HET-XL contrastive losses: heteroscedastic noise in embedding space, every caption a class.

The HET-XL paper's multimodal view: in CLIP training each image's classes are the B captions of
the global batch (the "3.5 billion class" problem), the text embeddings playing the role of the
classifier W. HET-XL noise goes into the embedding space. For S samples ("worlds") s:
  L_s = t * (X + E_s) (Y + H_s)^T   [B_img, B_txt]
with E_s the image-side noise (and H_s the optional text-side noise; either may be off), drawn
from a low-rank-plus-diagonal Gaussian per example (hetclip.heads.noise). Then
  softmax: image->text  log p_i = log (1/S) sum_s softmax(L_s[i, :])_i
           text->image  log q_j = log (1/S) sum_s softmax(L_s[:, j])_j
           loss = -(mean_i log p_i + mean_j log q_j) / 2
  sigmoid: p_ij = (1/S) sum_s sigmoid(L_s[i, j] + b);
           loss = -(1/B) sum_ij [z_ij log p_ij + (1 - z_ij) log(1 - p_ij)], z_ij = [i == j]
Both directions use the same worlds L_s, so the symmetric loss is one consistent model. Noise for
example n is drawn from fold_in(key, n) with n its index in the GLOBAL batch, so the sharded
losses (hetclip.losses.sharded) regenerate exactly the same worlds on every device and equal the
single-device loss. Streaming over S (hetclip.heads.mc) keeps memory independent of S.
At evaluation, embeddings are deterministic (no noise).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hetclip.heads import mc
from hetclip.heads.noise import sample_keyed_noise

IMAGE_SIDE, TEXT_SIDE = 0, 1


class NoiseParams(NamedTuple):
    """Per-example noise parameters of one side: J [R, D], v [B, D], d [B, D]."""

    factors: jax.Array
    scale: jax.Array
    diag: jax.Array


def noisy_embeddings(
    embeddings: jax.Array,
    noise: NoiseParams | None,
    example_ids: jax.Array,
    key: jax.Array,
    side: int,
    num_samples: int,
) -> jax.Array:
    """[B, C, D]: C noisy copies of each embedding (plain copies when `noise` is None)."""
    if noise is None:
        batch, dim = embeddings.shape
        return jnp.broadcast_to(embeddings[:, None], (batch, num_samples, dim))
    eps = sample_keyed_noise(
        jax.random.fold_in(key, side), *noise, num_samples=num_samples, example_ids=example_ids
    )
    return embeddings[:, None] + eps.astype(embeddings.dtype)


def world_logits(rows: jax.Array, cols: jax.Array, log_scale: jax.Array) -> jax.Array:
    """[C, B_rows, B_cols] = t * rows_c cols_c^T for noisy rows [B_r, C, D], cols [B_c, C, D]."""
    return jnp.exp(log_scale) * jnp.einsum(
        "rcd,kcd->crk", rows, cols, preferred_element_type=jnp.float32
    )


def _sides(params, aux, key, chunk_size, col_axes=None):
    """The chunk's noisy row and column embeddings from params / aux of a block. With col_axes
    (inside shard_map) each device holds only its share of the columns: it draws their noise
    and the noisy columns [B_l, C, D] are gathered over those mesh axes into [B, C, D], so no
    device draws another's noise (the gather's transpose returns each share's gradient)."""
    rows = noisy_embeddings(
        params["rows"], params["row_noise"], aux["row_ids"], key, aux["row_side"], chunk_size
    )
    cols = noisy_embeddings(
        params["cols"], params["col_noise"], aux["col_ids"], key, aux["col_side"], chunk_size
    )
    if col_axes:
        cols = jax.lax.all_gather(cols, col_axes, axis=0, tiled=True)
    return rows, cols


def _symmetric_softmax_terms(params, aux, key, chunk_size):
    """[2, B, C]: image->text and text->image log-probabilities of the matches, one block."""
    logits = world_logits(*_sides(params, aux, key, chunk_size), params["log_scale"])
    diagonal = jnp.arange(logits.shape[1])
    by_row = jax.nn.log_softmax(logits, axis=-1)[:, diagonal, diagonal]  # [C, B]
    by_col = jax.nn.log_softmax(logits, axis=-2)[:, diagonal, diagonal]
    return jnp.stack([by_row.T, by_col.T])


def matched_row_log_probs(
    rows: jax.Array,
    cols: jax.Array,
    log_scale: jax.Array,
    offset: int | jax.Array,
    column_block: int | None = None,
) -> jax.Array:
    """[C, B_rows]: log softmax over columns at the match (row i <-> column i + offset) of the
    worlds rows [B_r, C, D] x cols [B_c, C, D].

    With `column_block`, the columns are visited in blocks of that size with a running
    log-sum-exp (each block recomputed in the backward pass), so only [C, B_r, column_block]
    logits exist at once instead of [C, B_r, B_c]: the softmax loss chunked over the batch.
    """
    matched = jnp.take(cols, jnp.arange(rows.shape[0]) + offset, axis=0)
    positive = jnp.exp(log_scale) * jnp.einsum(
        "rcd,rcd->cr", rows, matched, preferred_element_type=jnp.float32
    )
    if column_block is None or column_block >= cols.shape[0]:
        return positive - jax.nn.logsumexp(world_logits(rows, cols, log_scale), axis=-1)
    if cols.shape[0] % column_block:
        raise ValueError(f"column_block {column_block} does not divide {cols.shape[0]} columns.")
    blocks = cols.reshape(cols.shape[0] // column_block, column_block, *cols.shape[1:])

    log_sum = mc.streaming_logsumexp(
        lambda block: world_logits(rows, block, log_scale), blocks, checkpoint=True
    )
    return positive - log_sum


def _row_softmax_terms(params, aux, key, chunk_size, column_block=None, col_axes=None):
    """[B_rows, C]: log softmax over columns at the match (row i <-> column i + offset)."""
    rows, cols = _sides(params, aux, key, chunk_size, col_axes)
    return matched_row_log_probs(rows, cols, params["log_scale"], aux["offset"], column_block).T


def _sigmoid_terms(params, aux, key, chunk_size):
    """[B_rows, B_cols, C]: log sigmoid(+(L_s + b)) for the matching pair (row i <-> column
    i + offset), log sigmoid(-(L_s + b)) for every other pair: the one term of
    z log p + (1 - z) log(1 - p) that each pair needs (half the work of computing both)."""
    logits = world_logits(*_sides(params, aux, key, chunk_size), params["log_scale"])
    logits = jnp.moveaxis(logits + params["bias"], 0, -1)
    rows, cols = logits.shape[:2]
    positives = (jnp.arange(rows)[:, None] + aux["offset"]) == jnp.arange(cols)[None]
    return jax.nn.log_sigmoid(jnp.where(positives[..., None], logits, -logits))


def _block(rows, cols, row_noise, col_noise, row_ids, col_ids, row_side, col_side, offset=0):
    params = {"rows": rows, "cols": cols, "row_noise": row_noise, "col_noise": col_noise}
    aux = {
        "row_ids": row_ids,
        "col_ids": col_ids,
        "row_side": row_side,
        "col_side": col_side,
        "offset": offset,
    }
    return params, aux


def softmax_direction_log_probs(
    rows,
    cols,
    log_scale,
    key,
    *,
    row_noise,
    col_noise,
    row_ids,
    col_ids,
    row_side,
    col_side,
    offset,
    num_samples,
    chunk_size,
    column_block: int | None = None,
    col_axes: tuple[str, ...] | None = None,
) -> jax.Array:
    """[B_rows]: log (1/S) sum_s softmax(L_s[i, :])_{i + offset} for one block of the batch
    (columns visited `column_block` at a time when given). With col_axes (inside shard_map),
    cols / col_noise / col_ids are this device's share of the columns, gathered noisy."""
    params, aux = _block(
        rows, cols, row_noise, col_noise, row_ids, col_ids, row_side, col_side, offset
    )
    params["log_scale"] = log_scale
    terms = functools.partial(_row_softmax_terms, column_block=column_block, col_axes=col_axes)
    return mc.log_mean_exp(terms, params, aux, key, num_samples, chunk_size)


def sigmoid_block_log_likelihood(
    rows,
    cols,
    log_scale,
    bias,
    key,
    *,
    row_noise,
    col_noise,
    row_ids,
    col_ids,
    offset,
    num_samples,
    chunk_size,
) -> jax.Array:
    """Scalar sum over the block's pairs of z log p + (1 - z) log(1 - p); rows are images."""
    params, aux = _block(
        rows, cols, row_noise, col_noise, row_ids, col_ids, IMAGE_SIDE, TEXT_SIDE, offset
    )
    params.update(log_scale=log_scale, bias=bias)
    return mc.log_mean_exp(_sigmoid_terms, params, aux, key, num_samples, chunk_size).sum()


def hetxl_clip_loss(
    image: jax.Array,
    text: jax.Array,
    log_scale: jax.Array,
    key: jax.Array,
    *,
    image_noise: NoiseParams | None,
    text_noise: NoiseParams | None = None,
    num_samples: int,
    max_chunk: int = 8,
) -> jax.Array:
    """Scalar HET-XL softmax contrastive loss on one device; image, text [B, D] normalised."""
    ids = jnp.arange(image.shape[0])
    params, aux = _block(image, text, image_noise, text_noise, ids, ids, IMAGE_SIDE, TEXT_SIDE)
    params["log_scale"] = log_scale
    chunk = mc.chunk_size_for(num_samples, max_chunk)
    log_probs = mc.log_mean_exp(_symmetric_softmax_terms, params, aux, key, num_samples, chunk)
    return -log_probs.mean(axis=-1).sum() / 2


def hetxl_siglip_loss(
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
) -> jax.Array:
    """Scalar HET-XL sigmoid contrastive loss on one device; image, text [B, D] normalised."""
    ids = jnp.arange(image.shape[0])
    chunk = mc.chunk_size_for(num_samples, max_chunk)
    total = sigmoid_block_log_likelihood(
        image,
        text,
        log_scale,
        bias,
        key,
        row_noise=image_noise,
        col_noise=text_noise,
        row_ids=ids,
        col_ids=ids,
        offset=0,
        num_samples=num_samples,
        chunk_size=chunk,
    )
    return -total / image.shape[0]


__all__ = [
    "NoiseParams",
    "hetxl_clip_loss",
    "hetxl_siglip_loss",
    "noisy_embeddings",
    "sigmoid_block_log_likelihood",
    "softmax_direction_log_probs",
    "world_logits",
]
