"""HET-XL's softmax MC log-likelihood of one block of examples, with its gradient written out.

  z_s = (locs + eps_s W) / tau                       eps [B, S, D], W [D, K], locs [B, K]
  t_s = z_s[y] - logsumexp_k z_s                     (log softmax of the label, per sample)
  ll  = log (1/S) sum_s exp(t_s)                     (HET-XL paper, the MC softmax likelihood)

Why a hand-written gradient: autodiff of the plain composition makes XLA:CPU run about fifteen
elementwise passes over the [S, K] logits per example (a materialised one-hot, the scalar tau
broadcast to a full array, the log-softmax's exp written out, a transposed copy for the sum over
samples), 0.15-0.3 of the one-pass mode's time at S = 1000, K = 29,593. Here the forward pass
reads the logits twice (max; exp and sum, writing E = exp(z - max)) and nothing else touches
[S, K] but the three matmuls: dL/dz_s = g w_s (onehot(y) - E_s / n_s), w = softmax_s(t), is a
row-scaled E plus a one-hot column, so the backward matmuls read E and add the label columns'
rank-one terms. tau is folded into eps (a [S, D] scale, not a [S, K] one), and its gradient
comes from the identity
  sum_{s,k} dL/dz_sk z_sk = sum_k (sum_s dL/dz_sk) locs_k / tau
                            + sum_{s,d} (eps_s / tau)_d (dL/dz_s W^T)_d
which needs no pass over [S, K] either. eps / tau is written once (hetclip.heads.xla_cpu).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetclip.heads.xla_cpu import written_once


@jax.custom_vjp
def projected_softmax_log_likelihood(
    eps: jax.Array, kernel: jax.Array, locs: jax.Array, temperature: jax.Array, labels: jax.Array
) -> jax.Array:
    """[B] log (1/S) sum_s softmax((locs + eps_s W) / tau)_y.

    eps [B, S, D] pre-logit noise, kernel W [D, K], locs [B, K] (phi W + b), temperature tau
    [] (a scalar), labels [B] int. The matmuls run in the kernel's dtype, the rest in float32."""
    return _forward(eps, kernel, locs, temperature, labels)[0]


def _scaled(eps: jax.Array, kernel: jax.Array, locs: jax.Array, temperature: jax.Array):
    """(eps / tau in the kernel's dtype [B, S, D], locs / tau [B, 1, K] float32)."""
    inverse = 1.0 / temperature.astype(jnp.float32)
    scaled_eps = (eps.astype(jnp.float32) * inverse).astype(kernel.dtype)
    return scaled_eps, (locs.astype(jnp.float32) * inverse)[:, None, :]


def _logits(scaled_eps: jax.Array, kernel: jax.Array) -> jax.Array:
    """[B, S, K] float32 noise part of z: (eps / tau) W."""
    return jnp.einsum("bsd,dk->bsk", scaled_eps, kernel).astype(jnp.float32)


def _forward(eps, kernel, locs, temperature, labels):
    num_samples = eps.shape[1]
    labels = labels.astype(jnp.int32)
    scaled_eps, scaled_locs = _scaled(eps, kernel, locs, temperature)
    scaled_eps = written_once(scaled_eps, temperature > 0)  # read by both passes
    logits = scaled_locs + _logits(scaled_eps, kernel)  # [B, S, K], fused into what reads it
    row_max = jnp.max(logits, -1, keepdims=True)
    shifted_exp = jnp.exp(logits - row_max)  # [B, S, K]: kept, the backward pass's matmuls read it
    normaliser = jnp.sum(shifted_exp, -1)  # [B, S]
    label_logits = jnp.take_along_axis(logits, labels[:, None, None], -1)[..., 0]
    sample_terms = label_logits - row_max[..., 0] - jnp.log(normaliser)  # [B, S]: t_s
    log_num = jnp.log(float(num_samples))
    log_likelihood = jax.nn.logsumexp(sample_terms, -1) - log_num  # [B]
    sample_weights = jnp.exp(sample_terms - log_likelihood[:, None] - log_num)  # softmax_s(t)
    residuals = (eps, scaled_eps, kernel, locs, scaled_locs, temperature, labels)
    residuals += (shifted_exp.astype(kernel.dtype), normaliser, sample_weights)
    return log_likelihood, residuals


def _backward(residuals, cotangent):
    # eps and locs stay only for their dtypes (live anyway: they are the function's inputs).
    (eps, scaled_eps, kernel, locs, scaled_locs, temperature, labels) = residuals[:7]
    shifted_exp, normaliser, sample_weights = residuals[7:]
    # dL/dz_sk = a_s (onehot_k - E_sk / n_s) with a = g w and E = exp(z - max): a row-scaled E
    # plus a one-hot column, so the matmuls read E as it is and [S, K] is never written again.
    label_weights = cotangent.astype(jnp.float32)[:, None] * sample_weights  # a [B, S]
    exp_weights = -label_weights / normaliser  # [B, S]
    batch, num_samples, dim = scaled_eps.shape
    label_columns = jnp.take(kernel, labels, axis=1).T.astype(jnp.float32)  # W[:, y] [B, D]
    exp_by_kernel = jnp.einsum("bsk,dk->bsd", shifted_exp, kernel).astype(jnp.float32)
    scaled_eps_grad = (
        exp_weights[..., None] * exp_by_kernel + label_weights[..., None] * label_columns[:, None]
    )  # dL/d(eps / tau) [B, S, D]
    # The kernel gradient contracts the major axis of both operands: transpose the smaller one
    # (eps, [S, D] against [S, K]) explicitly; the barrier stops XLA folding it into the product.
    weighted_eps = (scaled_eps.astype(jnp.float32) * exp_weights[..., None]).astype(kernel.dtype)
    weighted_eps_t = jax.lax.optimization_barrier(weighted_eps.reshape(batch * num_samples, dim).T)
    kernel_grad = weighted_eps_t @ shifted_exp.reshape(batch * num_samples, -1)  # [D, K]
    label_kernel_grad = jnp.einsum("bsd,bs->bd", scaled_eps.astype(jnp.float32), label_weights)
    kernel_grad = kernel_grad.astype(jnp.float32).at[:, labels].add(label_kernel_grad.T)
    # dL/d(locs / tau) [B, K]: the sum over samples as a product (XLA:CPU reduces over a major
    # axis slowly), plus the one-hot part.
    scaled_locs_grad = jnp.einsum("bsk,bs->bk", shifted_exp, exp_weights.astype(kernel.dtype))
    scaled_locs_grad = (
        scaled_locs_grad.astype(jnp.float32)
        .at[jnp.arange(batch), labels]
        .add(label_weights.sum(-1))
    )
    inverse = 1.0 / temperature.astype(jnp.float32)
    dot_with_logits = jnp.sum(scaled_locs_grad * scaled_locs[:, 0]) + jnp.sum(
        scaled_eps_grad * scaled_eps.astype(jnp.float32)
    )  # sum_{s,k} dL/dz_sk z_sk, the identity in the module docstring
    return (
        (scaled_eps_grad * inverse).astype(eps.dtype),
        kernel_grad.astype(kernel.dtype),
        (scaled_locs_grad * inverse).astype(locs.dtype),
        (-inverse * dot_with_logits).astype(temperature.dtype),
        None,
    )


projected_softmax_log_likelihood.defvjp(_forward, _backward)
