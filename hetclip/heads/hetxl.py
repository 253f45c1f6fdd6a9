"""HET-XL (Collier et al., ICLR 2023): heteroscedastic noise in PRE-LOGIT space.

u_s = (phi + eps'_s(x)) W + b = locs + eps'_s W,  eps'_s ~ N(0, Sigma'(x)),
Sigma'(x) = diag(v) J^T J diag(v) + diag(d^2), J [R, D], v(x), d(x) in R^D.
Sigma' does not depend on K, so the extra parameters (R*D + 2*(D*D + D) + 1) are independent of
the number of classes, and the temperature is learned on the training data (bounded, see
hetclip.heads.temperature). Each sample costs one [D] x [D, K] product per example: the
per-dimension diagonal noise cannot be pushed through W once, so S samples cost B*S*D*K
multiply-adds; streaming (hetclip.heads.mc) keeps the memory at B*C*K whatever S is.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from hetclip.heads import mc
from hetclip.heads.base import HeteroscedasticHead
from hetclip.heads.noise import sample_low_rank_noise
from hetclip.heads.projected_softmax import projected_softmax_log_likelihood


@jax.custom_vjp
def project_samples(eps: jax.Array, kernel: jax.Array) -> jax.Array:
    """eps [B, C, D] x kernel [D, K] -> [B, C, K], the per-sample product of HET-XL.

    Its kernel gradient eps^T g contracts the major axis of both operands, so one of them must
    be transposed into a [., B*C] copy, and XLA:CPU picks badly: for K > D it copies the
    [B*C, K] cotangent, not eps (that product is ~13% faster with eps transposed), and for
    K <= D it writes eps itself transposed from the noise fusion (at K = 1000, S = 1000 that
    write took 0.76 s of a 3 s step). Here the smaller operand is transposed explicitly, kept
    apart by an optimisation barrier (the compiler would fold it back into the product).
    """
    return jnp.einsum("bcd,dk->bck", eps, kernel)


def _project_samples_fwd(eps, kernel):
    return project_samples(eps, kernel), (eps, kernel)


def _project_samples_bwd(residuals, cotangent):
    eps, kernel = residuals
    batch, samples, dim = eps.shape
    eps_grad = jnp.einsum("bck,dk->bcd", cotangent, kernel)
    if samples == 1:  # the compiler may then merge this product with the locs' own (same g)
        return eps_grad, jnp.einsum("bcd,bck->dk", eps, cotangent).astype(kernel.dtype)
    if kernel.shape[1] <= dim:  # the cotangent is the smaller operand: transpose it
        cot_t = jax.lax.optimization_barrier(cotangent.reshape(batch * samples, -1).T)
        return eps_grad, (cot_t @ eps.reshape(batch * samples, dim)).T.astype(kernel.dtype)
    eps_t = jax.lax.optimization_barrier(eps.reshape(batch * samples, dim).T)  # [D, B*C]
    kernel_grad = eps_t @ cotangent.reshape(batch * samples, -1)
    return eps_grad, kernel_grad.astype(kernel.dtype)


project_samples.defvjp(_project_samples_fwd, _project_samples_bwd)


def hetxl_softmax_log_likelihood(
    params, keys: jax.Array, num_samples: int, labels: jax.Array
) -> jax.Array:
    """[b] softmax MC log-likelihood of a block of examples, S samples each from keys [b]: the
    same value and draws as `hetxl_logits` + `samples_log_likelihood`, in fewer passes
    (hetclip.heads.projected_softmax)."""
    noise = _block_noise(params, keys, num_samples)
    return projected_softmax_log_likelihood(
        noise, params["kernel"], params["locs"], params["temperature"], labels
    )


def hetxl_folded_softmax_log_likelihood(
    params, keys: jax.Array, num_samples: int, labels: jax.Array
) -> jax.Array:
    """`hetxl_softmax_log_likelihood` (rounding apart) with the noise added to phi before the
    product, z_s = ((phi + eps'_s) W + b) / tau: the block's only [D, K] products are the
    samples' (no locs = phi W + b of its own, 1/S of the work). Reads params["phi"] [b, D] and
    params["bias"] [K], not params["locs"]."""
    kernel = params["kernel"]
    noisy_phi = mc.add_to_samples(params["phi"], _block_noise(params, keys, num_samples))
    bias = jnp.broadcast_to(params["bias"], (noisy_phi.shape[0], kernel.shape[1]))
    return projected_softmax_log_likelihood(noisy_phi, kernel, bias, params["temperature"], labels)


def _block_noise(params, keys: jax.Array, num_samples: int) -> jax.Array:
    """eps' [b, S, D], example i's samples from keys[i]."""
    return sample_low_rank_noise(
        keys, params["factors"], params["scale"], params["diag"], num_samples
    )


# The one-pass softmax block adds the noise to phi below this many samples: at B = 32,
# K = 1,000 on the 2-core CPU that block took 0.95 / 0.97 / 1.00 / 1.03 / 1.16 of the time of
# the locs form at S = 16 / 32 / 64 / 128 / 1000 (K = 29,593, S = 16: 0.88); at larger S the
# saved product is a small share and the extra [S, D] pass for phi's gradient costs more.
FOLDED_BELOW_SAMPLES = 64


def hetxl_logits(params, key: jax.Array, chunk_size: int) -> jax.Array:
    """[B, C, K] = (locs + eps' W) / tau, eps' [B, C, D] drawn in pre-logit space."""
    kernel = params["kernel"]
    eps = sample_low_rank_noise(key, params["factors"], params["scale"], params["diag"], chunk_size)
    noise_logits = project_samples(eps.astype(kernel.dtype), kernel)
    logits = mc.add_to_samples(params["locs"], noise_logits.astype(jnp.float32))
    return logits / params["temperature"]


def hetxl_folded_logits(params, key: jax.Array, chunk_size: int) -> jax.Array:
    """[B, C, K] = ((phi + eps') W + b) / tau: `hetxl_logits`' values (same draws; rounding
    apart) with the noise added before the product, which then is the only one (no separate
    locs = phi W + b): half the matmul work of the forward and backward passes at one sample.
    The head takes it for S = 1, where it needs params["phi"] [B, D] and params["bias"] [K]."""
    kernel = params["kernel"]
    eps = sample_low_rank_noise(key, params["factors"], params["scale"], params["diag"], chunk_size)
    noisy_phi = (params["phi"][:, None] + eps).astype(kernel.dtype)  # [B, C, D]
    logits = jnp.einsum("bcd,dk->bck", noisy_phi, kernel).astype(jnp.float32) + params["bias"]
    return logits / params["temperature"]


class HetXLHead(HeteroscedasticHead):
    # Each sample costs a [D] x [D, K] product: the one-pass training mode saves a quarter of
    # them (the streamed backward pass recomputes the forward's).
    one_pass_mean: ClassVar[bool] = True
    per_example_params: ClassVar[tuple[str, ...]] = ("locs", "scale", "diag", "phi")
    learn_temperature: bool = True

    def noisy_logits(self, phi, num_samples):
        kernel, bias, locs = self.classifier(phi)
        # The D x D noise layers name their output axis "noise_embed": "embed" twice in one
        # kernel could not be sharded.
        noise = self.noise_and_temperature(phi, phi.shape[-1], "noise_embed")
        params = {"locs": locs, "kernel": kernel.astype(self.dtype), **noise}
        # phi and b for the forms that add the noise before the product (unread elsewhere).
        params.update(phi=phi, bias=bias)
        logits_fn = hetxl_folded_logits if num_samples == 1 else hetxl_logits
        return logits_fn, params, params["temperature"]

    def one_pass_block(self, logits_fn, params, labels, num_samples):
        # Each block reads either locs or (phi, b): passing the other would cost its gradient
        # (for locs, its product too). Integer labels only take the fused softmax blocks: soft
        # labels weight every class and take the generic path.
        if self.form == "softmax" and labels.ndim == 1 and num_samples < FOLDED_BELOW_SAMPLES:
            block_fn, unread = hetxl_folded_softmax_log_likelihood, ("locs",)
        elif self.form == "softmax" and labels.ndim == 1:
            block_fn, unread = hetxl_softmax_log_likelihood, ("phi", "bias")
        else:
            block_fn, _ = super().one_pass_block(logits_fn, params, labels, num_samples)
            unread = ("phi", "bias")
        return block_fn, {k: v for k, v in params.items() if k not in unread}
