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

import jax
import jax.numpy as jnp

from hetclip.heads.base import HeteroscedasticHead
from hetclip.heads.noise import sample_low_rank_noise


def hetxl_logits(params, key: jax.Array, chunk_size: int) -> jax.Array:
    """[B, C, K] = (locs + eps' W) / tau, eps' [B, C, D] drawn in pre-logit space."""
    kernel = params["kernel"]
    eps = sample_low_rank_noise(key, params["factors"], params["scale"], params["diag"], chunk_size)
    noise_logits = jnp.einsum("bcd,dk->bck", eps.astype(kernel.dtype), kernel)
    return (params["locs"][:, None, :] + noise_logits.astype(jnp.float32)) / params["temperature"]


class HetXLHead(HeteroscedasticHead):
    learn_temperature: bool = True

    def noisy_logits(self, phi):
        kernel, _, locs = self.classifier(phi)
        # The D x D noise layers name their output axis "noise_embed": "embed" twice in one
        # kernel could not be sharded.
        noise = self.noise_and_temperature(phi, phi.shape[-1], "noise_embed")
        params = {"locs": locs, "kernel": kernel.astype(self.dtype), **noise}
        return hetxl_logits, params, params["temperature"]
