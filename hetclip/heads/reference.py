"""Straightforward materialising implementations of the heads' MC likelihoods.

They build the whole [B, S, K] tensor of noisy logits and average it as the paper writes the
predictive down, using the same chunk keys as the streaming code, so they must agree with it to
float tolerance. Tests compare against them and benchmarks/heads.py times them; they are not
meant for training (memory grows as B * S * K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hetclip.heads import mc
from hetclip.heads.noise import sample_keyed_noise, sample_low_rank_noise


def _noisy_logits(kind, params, phi, sample_noise, temperature_bounds, min_scale):
    p = params["params"]
    locs = phi @ p["kernel"] + p["bias"]
    noise = p["noise"]
    scale = phi @ noise["scale"]["kernel"] + noise["scale"]["bias"]
    diag = jax.nn.softplus(phi @ noise["diag"]["kernel"] + noise["diag"]["bias"]) + min_scale
    eps = sample_noise(noise["factors"], scale, diag)  # [B, S, D or K]
    if kind == "hetxl":
        lower, upper = temperature_bounds
        tau = lower + (upper - lower) * jax.nn.sigmoid(p["temperature"]["pre_sigmoid"])
        return (locs[:, None] + eps @ p["kernel"]) / tau
    if kind == "het":
        return locs[:, None] + eps
    raise ValueError(f"No noise in a {kind!r} head.")


def materialised_noisy_logits(
    kind: str,
    params,
    phi: jax.Array,
    key: jax.Array,
    num_samples: int,
    chunk_size: int,
    temperature_bounds: tuple[float, float] = (0.05, 5.0),
    min_scale: float = 1e-3,
) -> jax.Array:
    """[B, S, K] noisy logits / tau of a "het" (fixed tau = 1) or "hetxl" (learned tau) head,
    from its unboxed flax params, drawn chunk-major as the streamed modes draw them."""

    def sample_noise(factors, scale, diag):
        chunks = mc.chunk_keys(key, num_samples // chunk_size)
        draws = [sample_low_rank_noise(k, factors, scale, diag, chunk_size) for k in chunks]
        return jnp.concatenate(draws, axis=1)

    return _noisy_logits(kind, params, phi, sample_noise, temperature_bounds, min_scale)


def materialised_keyed_noisy_logits(
    kind: str,
    params,
    phi: jax.Array,
    key: jax.Array,
    num_samples: int,
    temperature_bounds: tuple[float, float] = (0.05, 5.0),
    min_scale: float = 1e-3,
) -> jax.Array:
    """[B, S, K] as above, each example's S samples drawn at once from fold_in(key, b), as the
    "mean_log_likelihood" mode draws them."""

    def sample_noise(factors, scale, diag):
        ids = jnp.arange(phi.shape[0])
        return sample_keyed_noise(key, factors, scale, diag, num_samples, ids)

    return _noisy_logits(kind, params, phi, sample_noise, temperature_bounds, min_scale)


def materialised_log_likelihood(form: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[B] log-likelihood of the MC predictive from all samples' logits [B, S, K]."""
    num_samples = logits.shape[1]
    if form == "softmax":
        per_sample = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), labels[:, None, None], -1)[
            ..., 0
        ]
        return jax.nn.logsumexp(per_sample, axis=1) - jnp.log(num_samples)
    probs = jax.nn.sigmoid(logits).mean(1)
    return jnp.sum(labels * jnp.log(probs) + (1 - labels) * jnp.log1p(-probs), -1)
