"""Monte Carlo averages over S noise samples, streamed in chunks so memory does not grow with S.

Heteroscedastic heads predict p(y|x) = (1/S) sum_s f(u_s) with u_s one noisy logit vector per
sample (HET-XL paper, eq. for the MC softmax / sigmoid predictive). A direct implementation
materialises [B, S, K] logits: 3.8 GB at B=32, S=1000, K=29,593 before gradients. Here samples
are drawn chunk by chunk (C at a time, chunk c seeded by fold_in(key, c)) inside lax.scan:

- `log_mean_exp` computes log (1/S) sum_s exp(t_s) with a running max / running sum (forward),
  and a custom VJP that recomputes each chunk in the backward pass and weights its gradient by
  exp(t_s - logsumexp). Only [..., C]-sized chunks and the inputs' gradients are ever alive.
- `mean_over_samples` computes (1/S) sum_s t_s (predictive probabilities at evaluation).

`term_fn(params, aux, key, chunk_size) -> [..., C]` produces the per-sample terms of one chunk
(e.g. log softmax(u_s)[y]); `params` is a pytree of float arrays the terms depend on
differentiably, `aux` a pytree of data they need without gradient (integer labels). Because
chunk c always uses fold_in(key, c), the result equals a materialising computation that draws the
same chunks and concatenates them (hetclip/heads/reference.py, used by the tests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hetclip.heads.xla_cpu import sum_over_samples

TermFn = Callable[[Any, Any, jax.Array, int], jax.Array]


def chunk_size_for(num_samples: int, max_chunk: int) -> int:
    """The largest divisor of `num_samples` that is at most `max_chunk` (so chunks tile S)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    return max(d for d in range(1, min(max_chunk, num_samples) + 1) if num_samples % d == 0)


def chunk_keys(key: jax.Array, num_chunks: int) -> jax.Array:
    """[num_chunks] keys: chunk c draws its noise from fold_in(key, c)."""
    return jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(num_chunks))


def _num_chunks(num_samples: int, chunk_size: int) -> int:
    if num_samples % chunk_size:
        raise ValueError(f"chunk_size {chunk_size} does not divide num_samples {num_samples}.")
    return num_samples // chunk_size


def zero_cotangent(x: jax.Array):
    """Zeros of x's shape as its cotangent (float0 for integer inputs such as labels, keys)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def streaming_logsumexp(
    values_fn: Callable[[jax.Array], jax.Array], xs: jax.Array, checkpoint: bool = False
) -> jax.Array:
    """[...]: log sum_x sum_j exp(values_fn(x)[..., j]) over the leading axis of `xs`, one x at
    a time with a running max and a running sum (only one values_fn(x) is alive at once).

    With `checkpoint`, autodiff recomputes each values_fn(x) in the backward pass instead of
    storing it. The first element seeds the carry: inside shard_map its values then carry the
    right device-variance type, which a constant initial carry would not.
    """

    def stats(x):
        values = values_fn(x)
        values_max = values.max(-1)
        return values_max, jnp.exp(values - values_max[..., None]).sum(-1)

    def body(carry, x):
        running_max, running_sum = carry
        chunk_max, chunk_sum = stats(x)
        new_max = jnp.maximum(running_max, chunk_max)
        running_sum = running_sum * jnp.exp(running_max - new_max) + chunk_sum * jnp.exp(
            chunk_max - new_max
        )
        return (new_max, running_sum), None

    if checkpoint:
        body = jax.checkpoint(body)
    (running_max, running_sum), _ = jax.lax.scan(body, stats(xs[0]), xs[1:])
    return running_max + jnp.log(running_sum)


def _forward(term_fn: TermFn, params, aux, key, num_samples: int, chunk_size: int) -> jax.Array:
    keys = chunk_keys(key, _num_chunks(num_samples, chunk_size))
    log_sum = streaming_logsumexp(lambda k: term_fn(params, aux, k, chunk_size), keys)
    return log_sum - jnp.log(float(num_samples))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4, 5))
def log_mean_exp(
    term_fn: TermFn, params, aux, key: jax.Array, num_samples: int, chunk_size: int
) -> jax.Array:
    """[...]: log (1/S) sum_s exp(t_s), t_s = term_fn(params, aux, key_c, C)[..., s]."""
    return _forward(term_fn, params, aux, key, num_samples, chunk_size)


def _log_mean_exp_fwd(term_fn, params, aux, key, num_samples, chunk_size):
    out = _forward(term_fn, params, aux, key, num_samples, chunk_size)
    return out, (params, aux, key, out)


def _log_mean_exp_bwd(term_fn, num_samples, chunk_size, residuals, cotangent):
    params, aux, key, out = residuals
    log_sum = out + jnp.log(float(num_samples))
    keys = chunk_keys(key, _num_chunks(num_samples, chunk_size))

    def chunk_grads(chunk_key):
        terms, vjp = jax.vjp(lambda p: term_fn(p, aux, chunk_key, chunk_size), params)
        # d/dt_s log sum_s' exp(t_s') = exp(t_s - logsumexp): recomputed chunk by chunk.
        weights = cotangent[..., None] * jnp.exp(terms - log_sum[..., None])
        return vjp(weights.astype(terms.dtype))[0]

    def body(grads, chunk_key):
        return jax.tree.map(jnp.add, grads, chunk_grads(chunk_key)), None

    grads, _ = jax.lax.scan(body, chunk_grads(keys[0]), keys[1:])
    return grads, jax.tree.map(zero_cotangent, aux), zero_cotangent(key)


log_mean_exp.defvjp(_log_mean_exp_fwd, _log_mean_exp_bwd)


def mean_over_samples(
    term_fn: TermFn, params, aux, key: jax.Array, num_samples: int, chunk_size: int
) -> jax.Array:
    """[...]: (1/S) sum_s t_s, streamed (e.g. the MC predictive probabilities [B, K])."""
    keys = chunk_keys(key, _num_chunks(num_samples, chunk_size))

    def chunk_sum(chunk_key):
        return term_fn(params, aux, chunk_key, chunk_size).sum(-1)

    def body(total, chunk_key):
        return total + chunk_sum(chunk_key), None

    total, _ = jax.lax.scan(body, chunk_sum(keys[0]), keys[1:])
    return total / num_samples


def add_to_samples(locs: jax.Array, noise: jax.Array) -> jax.Array:
    """locs [B, K] + noise [B, C, K] -> [B, C, K].

    Same as locs[:, None] + noise, but the gradient of locs (a sum over the sample axis C, not
    the minor one) is hetclip.heads.xla_cpu.sum_over_samples.
    """
    dtype = jnp.result_type(locs, noise)
    return _add_to_samples(locs.astype(dtype), noise.astype(dtype))


@jax.custom_vjp
def _add_to_samples(locs: jax.Array, noise: jax.Array) -> jax.Array:
    return locs[:, None, :] + noise


def _add_to_samples_fwd(locs, noise):
    return _add_to_samples(locs, noise), None


def _add_to_samples_bwd(_, cotangent):
    return sum_over_samples(cotangent), cotangent


_add_to_samples.defvjp(_add_to_samples_fwd, _add_to_samples_bwd)


def stack_samples(
    term_fn: TermFn, params, aux, key: jax.Array, num_samples: int, chunk_size: int
) -> jax.Array:
    """[..., S]: every sample's terms, drawn with the same chunk keys as the streaming versions
    (materialises S; for per-sample uncertainty metrics and for reference tests)."""
    keys = chunk_keys(key, _num_chunks(num_samples, chunk_size))
    chunks = jax.lax.map(lambda k: term_fn(params, aux, k, chunk_size), keys)  # [n, ..., C]
    return jnp.moveaxis(chunks, 0, -2).reshape(*chunks.shape[1:-1], num_samples)
