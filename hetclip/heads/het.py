"""HET (Collier et al. 2021): heteroscedastic noise in LOGIT space, the baseline of HET-XL.

u_s = phi W + b + eps_s(x), eps_s ~ N(0, Sigma(x)), Sigma(x) = diag(v) J^T J diag(v) + diag(d^2)
with J [R, K], v(x), d(x) in R^K (hetclip.heads.noise). Its extra parameters grow linearly in K:
R*K + 2*(D*K + K) (+1 for a learned temperature). The temperature is fixed by default because HET
tunes it on held-out data.
"""

from __future__ import annotations

import jax

from hetclip.heads.base import Head
from hetclip.heads.noise import LowRankNoise, sample_low_rank_noise
from hetclip.heads.temperature import Temperature


def het_logits(params, key: jax.Array, chunk_size: int) -> jax.Array:
    """[B, C, K] = (locs + eps) / tau with eps drawn in the K-dimensional logit space."""
    eps = sample_low_rank_noise(key, params["factors"], params["scale"], params["diag"], chunk_size)
    return (params["locs"][:, None, :] + eps) / params["temperature"]


class HetHead(Head):
    num_factors: int = 50
    temperature: float = 1.0
    learn_temperature: bool = False
    temperature_bounds: tuple[float, float] = (0.05, 5.0)
    min_scale: float = 1e-3

    def noisy_logits(self, phi):
        _, _, locs = self.classifier(phi)
        factors, scale, diag = LowRankNoise(
            self.num_classes,
            self.num_factors,
            self.min_scale,
            axis_name="classes",
            dtype=self.dtype,
            name="noise",
        )(phi)
        tau = Temperature(
            self.temperature, self.learn_temperature, self.temperature_bounds, name="temperature"
        )()
        params = {
            "locs": locs,
            "factors": factors,
            "scale": scale,
            "diag": diag,
            "temperature": tau,
        }
        return het_logits, params, tau
