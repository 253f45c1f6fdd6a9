"""HET (Collier et al. 2021): heteroscedastic noise in LOGIT space, the baseline of HET-XL.

u_s = phi W + b + eps_s(x), eps_s ~ N(0, Sigma(x)), Sigma(x) = diag(v) J^T J diag(v) + diag(d^2)
with J [R, K], v(x), d(x) in R^K (hetclip.heads.noise). Its extra parameters grow linearly in K:
R*K + 2*(D*K + K) (+1 for a learned temperature). The temperature is fixed by default because HET
tunes it on held-out data. Its training mode ("mean_log_likelihood") stays streamed: HET's
samples need no matmul, and drawing S x K normals per example from per-example keys was slower
(49 s against 17-22 s at B = 32, S = 1000, K = 29,593 on 2 CPU cores).
"""

from __future__ import annotations

import jax

from hetclip.heads import mc
from hetclip.heads.base import HeteroscedasticHead
from hetclip.heads.noise import sample_low_rank_noise


def het_logits(params, key: jax.Array, chunk_size: int) -> jax.Array:
    """[B, C, K] = (locs + eps) / tau with eps drawn in the K-dimensional logit space."""
    eps = sample_low_rank_noise(key, params["factors"], params["scale"], params["diag"], chunk_size)
    return mc.add_to_samples(params["locs"], eps) / params["temperature"]


class HetHead(HeteroscedasticHead):
    def noisy_logits(self, phi, num_samples):
        del num_samples  # the noise is added after the product: no cheaper form for S = 1
        _, _, locs = self.classifier(phi)
        params = {"locs": locs, **self.noise_and_temperature(phi, self.num_classes, "classes")}
        return het_logits, params, params["temperature"]
