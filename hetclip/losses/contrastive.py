"""Deterministic contrastive image-text losses on L2-normalised embeddings.

Each caption in the batch is a class for each image (and vice versa):
  CLIP (Radford et al. 2021):  logits = t * X Y^T [B, B];
      loss = (CE(logits, diag) + CE(logits^T, diag)) / 2
  SigLIP (Zhai et al. 2023):   logits = t * X Y^T + b;  z_ij = +1 if i == j else -1;
      loss = -(1/B) sum_ij log sigmoid(z_ij * logits_ij)
t = exp(log_scale) is the learned logit scale (big_vision stores the log, `t`), b the SigLIP bias
(big_vision's `b`, initialised around -10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """x / (||x|| + eps) over the last axis (big_vision's two-tower convention)."""
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def pairwise_logits(image: jax.Array, text: jax.Array, log_scale: jax.Array) -> jax.Array:
    """[B_img, B_txt] = exp(log_scale) * image text^T."""
    return jnp.exp(log_scale) * jnp.dot(image, text.T, preferred_element_type=jnp.float32)


def softmax_diagonal_log_probs(logits: jax.Array, offset: int | jax.Array = 0) -> jax.Array:
    """[B_rows]: log softmax(logits[i])[i + offset] (the matching caption of row i)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    rows = jnp.arange(logits.shape[0])
    return log_probs[rows, rows + offset]


def clip_loss(image: jax.Array, text: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Scalar symmetric softmax loss; image, text [B, D] normalised."""
    logits = pairwise_logits(image, text, log_scale)
    image_to_text = softmax_diagonal_log_probs(logits)
    text_to_image = softmax_diagonal_log_probs(logits.T)
    return -(image_to_text.mean() + text_to_image.mean()) / 2


def sigmoid_pair_log_likelihood(logits: jax.Array, offset: int | jax.Array = 0) -> jax.Array:
    """sum_ij log sigmoid(z_ij logits_ij) for a [B_rows, B_cols] block whose positives are
    (i, i + offset)."""
    rows = jnp.arange(logits.shape[0])[:, None]
    cols = jnp.arange(logits.shape[1])[None, :]
    signs = jnp.where(cols == rows + offset, 1.0, -1.0)
    return jax.nn.log_sigmoid(signs * logits.astype(jnp.float32)).sum()


def siglip_loss(
    image: jax.Array, text: jax.Array, log_scale: jax.Array, bias: jax.Array
) -> jax.Array:
    """Scalar sigmoid loss; image, text [B, D] normalised."""
    logits = pairwise_logits(image, text, log_scale) + bias
    return -sigmoid_pair_log_likelihood(logits) / image.shape[0]
