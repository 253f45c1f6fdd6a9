"""MC log-likelihoods and predictive probabilities of softmax and sigmoid heads.

With noisy logits u_s [B, K] (s = 1..S, already divided by the temperature):
  softmax:  log p(y|x) = log (1/S) sum_s softmax(u_s)_y                  (labels [B] int)
            soft labels q [B, K]: log (1/S) sum_s exp(sum_k q_k log softmax(u_s)_k)
  sigmoid:  p_k = (1/S) sum_s sigmoid(u_sk);
            log p(y|x) = sum_k y_k log p_k + (1 - y_k) log(1 - p_k)
            (multi-label, labels [B, K] in {0, 1} or soft)
Training maximises these log-likelihoods of the MC average (HET-XL paper), NOT the softmax of
averaged logits. Both are streamed over samples (hetclip.heads.mc); log p_k and log(1 - p_k) use
log-sigmoid terms so no probability is ever formed in a way that underflows. The mean over
examples, what a loss needs, also has a one-pass value-and-gradient form (`mc_mean_log_likelihood`,
hetclip.heads.fused) that draws each example's S samples together.

`logits_fn(params, key, chunk_size) -> [B, C, K]` draws one chunk of noisy logits from one key,
or from one key per example ([B] keys); it must be a top-level function of its arguments
(everything differentiable comes in through `params`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from hetclip.heads import fused, mc

FORMS = ("softmax", "sigmoid")
LogitsFn = Callable[[Any, jax.Array, int], jax.Array]
BlockLogLikelihoodFn = Callable[[Any, jax.Array, int, jax.Array], jax.Array]


def check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"Head form must be one of {FORMS}, got {form!r}.")


def softmax_log_terms(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits [B, C, K], labels [B] int or [B, K] soft -> [B, C] log-likelihood per sample."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if labels.ndim == 1:
        return jnp.take_along_axis(log_probs, labels[:, None, None].astype(jnp.int32), -1)[..., 0]
    return jnp.einsum("bck,bk->bc", log_probs, labels.astype(jnp.float32))


def sigmoid_log_terms(logits: jax.Array) -> jax.Array:
    """logits [B, C, K] -> [2, B, K, C]: log sigmoid(u) and log sigmoid(-u) per sample."""
    logits = jnp.moveaxis(logits.astype(jnp.float32), 1, -1)
    return jnp.stack([jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)])


def _softmax_terms(logits_fn: LogitsFn, params, labels, key, chunk_size):
    return softmax_log_terms(logits_fn(params, key, chunk_size), labels)


def _sigmoid_terms(logits_fn: LogitsFn, params, labels, key, chunk_size):
    del labels  # enter after the MC average
    return sigmoid_log_terms(logits_fn(params, key, chunk_size))


def sigmoid_log_likelihood(log_p: jax.Array, log_not_p: jax.Array, labels: jax.Array) -> jax.Array:
    """sum_k y log p_k + (1 - y) log(1 - p_k): [B, K] x 3 -> [B]."""
    labels = labels.astype(jnp.float32)
    return jnp.sum(labels * log_p + (1.0 - labels) * log_not_p, axis=-1)


def mc_log_likelihood(
    form: str,
    logits_fn: LogitsFn,
    params,
    labels: jax.Array,
    key: jax.Array,
    num_samples: int,
    chunk_size: int,
) -> jax.Array:
    """[B] log-likelihood of the MC-averaged predictive, streamed over samples."""
    check_form(form)
    if form == "softmax":
        term_fn = functools.partial(_softmax_terms, logits_fn)
        return mc.log_mean_exp(term_fn, params, labels, key, num_samples, chunk_size)
    term_fn = functools.partial(_sigmoid_terms, logits_fn)
    log_p, log_not_p = mc.log_mean_exp(term_fn, params, None, key, num_samples, chunk_size)
    return sigmoid_log_likelihood(log_p, log_not_p, labels)


def samples_log_likelihood(form: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[b] log-likelihood of the MC predictive from ALL S samples of b examples, logits [b, S, K]
    (labels [b] int or [b, K])."""
    log_num_samples = jnp.log(float(logits.shape[1]))
    if form == "softmax":
        return jax.nn.logsumexp(softmax_log_terms(logits, labels), -1) - log_num_samples
    log_p, log_not_p = jax.nn.logsumexp(sigmoid_log_terms(logits), -1) - log_num_samples
    return sigmoid_log_likelihood(log_p, log_not_p, labels)


def logits_block_log_likelihood(
    form: str, logits_fn: LogitsFn, params, keys: jax.Array, num_samples: int, labels: jax.Array
) -> jax.Array:
    """[b] log-likelihood of a block of b examples, all S samples of example i drawn from
    keys[i]: the generic `BlockLogLikelihoodFn` (bind form and logits_fn with functools.partial;
    a head may supply a fused one instead)."""
    return samples_log_likelihood(form, logits_fn(params, keys, num_samples), labels)


def _block(block_log_likelihood_fn, num_samples, shared, per_example, aux):
    labels, keys = aux  # keys [b]: each example's S samples come from its own key
    return block_log_likelihood_fn({**shared, **per_example}, keys, num_samples, labels)


def mc_mean_log_likelihood(
    block_log_likelihood_fn: BlockLogLikelihoodFn,
    shared,
    per_example,
    labels: jax.Array,
    key: jax.Array,
    num_samples: int,
    examples_per_block: int,
) -> jax.Array:
    """Scalar (1/B) sum_b log p(y_b|x_b), value and gradient in one pass (hetclip.heads.fused).

    `block_log_likelihood_fn(params, keys [b], S, labels [b]) -> [b]` computes a block's terms
    (`logits_block_log_likelihood` or a head's fused form); its params are split into `shared`
    (kernel, factors, temperature) and `per_example` (leaves [B, ...]: locs, scale, diag).
    Example b draws all its S samples at once from fold_in(key, b): a different draw from the
    chunked `mc_log_likelihood`, equally distributed. Memory: `examples_per_block` examples'
    [S, K] logits at a time."""
    batch = labels.shape[0]
    block_fn = functools.partial(_block, block_log_likelihood_fn, num_samples)
    aux = (labels, mc.chunk_keys(key, batch))  # [B]: fold_in(key, b), as for chunks
    weights = jnp.full((batch,), 1.0 / batch, jnp.float32)
    return fused.weighted_sum(block_fn, shared, per_example, aux, weights, examples_per_block)


def _prob_terms(form: str, logits_fn: LogitsFn, params, aux, key, chunk_size):
    logits = logits_fn(params, key, chunk_size).astype(jnp.float32)
    probs = jax.nn.softmax(logits, -1) if form == "softmax" else jax.nn.sigmoid(logits)
    return jnp.moveaxis(probs, 1, -1)  # [B, K, C]


def mc_probabilities(
    form: str, logits_fn: LogitsFn, params, key: jax.Array, num_samples: int, chunk_size: int
) -> jax.Array:
    """[B, K] MC-averaged predictive probabilities, streamed over samples."""
    check_form(form)
    term_fn = functools.partial(_prob_terms, form, logits_fn)
    return mc.mean_over_samples(term_fn, params, None, key, num_samples, chunk_size)


def mc_sample_probabilities(
    form: str, logits_fn: LogitsFn, params, key: jax.Array, num_samples: int, chunk_size: int
) -> jax.Array:
    """[B, S, K] per-sample predictive distributions (materialised: choose S with care)."""
    check_form(form)
    term_fn = functools.partial(_prob_terms, form, logits_fn)
    stacked = mc.stack_samples(term_fn, params, None, key, num_samples, chunk_size)  # [B, K, S]
    return jnp.moveaxis(stacked, -1, 1)
