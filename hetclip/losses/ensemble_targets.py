"""Teacher statistics for ensemble distribution distillation, streamed over members.

M teachers (ensemble members, or a HET/HET-XL head's MC samples) give distributions pi^(m)
[B, K] over K classes. Everything the distillation losses (hetclip/losses/dirichlet.py) and the
proxy target need is a function of three running sums over members, so M members never need a
[M, B, K] array at once (K = 30k classes):
    sum_m pi^(m),  sum_m ln pi^(m),  sum_m pi^(m) ln pi^(m).
From them (pibar = mean_m pi^(m)):
    MKL  = mean_m KL(pibar || pi^(m)) = sum_k pibar_k (ln pibar_k - mean_m ln pi^(m)_k)
    EPKL = (1 / M^2) sum_i sum_j KL(pi^(i) || pi^(j))
         = sum_k (mean_m pi^(m)_k ln pi^(m)_k - pibar_k mean_m ln pi^(m)_k)
The Proxy Dirichlet target of PD-EnD2 (Ryabinin, Malinin & Gales, NeurIPS 2021) is
beta_k = pibar_k beta0_hat + 1 with beta0_hat = (K - 1) / (2 MKL + eps) (or (K - 1) / (EPKL +
eps)): the precision at which a Dirichlet's members would spread as much as these do. The
estimate is close when beta0 >> K and biased low otherwise.

For a HET-XL head's MC samples the spread is that of the latent noise, which is aleatoric by
construction: a student distilled from them predicts that noise's spread, not model
disagreement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

PRECISION_ESTIMATORS = ("mkl", "epkl")


class EnsembleStats(NamedTuple):
    """Running sums over members: count [] and sum_probs, sum_log_probs, sum_p_log_p [B, K]."""

    count: jax.Array
    sum_probs: jax.Array
    sum_log_probs: jax.Array
    sum_p_log_p: jax.Array

    def mean_probs(self) -> jax.Array:
        """pibar [B, K]."""
        return self.sum_probs / self.count

    def mean_log_probs(self) -> jax.Array:
        """mean_m ln pi^(m) [B, K]."""
        return self.sum_log_probs / self.count

    def mkl(self) -> jax.Array:
        """mean_m KL(pibar || pi^(m)) [B]."""
        pibar = self.mean_probs()
        return jnp.maximum((xlogy(pibar, pibar) - pibar * self.mean_log_probs()).sum(-1), 0.0)

    def epkl(self) -> jax.Array:
        """(1 / M^2) sum_i sum_j KL(pi^(i) || pi^(j)) [B]."""
        cross = self.mean_probs() * self.mean_log_probs()
        return jnp.maximum((self.sum_p_log_p / self.count - cross).sum(-1), 0.0)


class ProxyTarget(NamedTuple):
    """Dir(beta), beta = mean_probs * precision + 1: mean_probs [B, K], precision [B]."""

    mean_probs: jax.Array
    precision: jax.Array

    def concentrations(self) -> jax.Array:
        """beta [B, K]."""
        return self.mean_probs * self.precision[..., None] + 1.0


def empty_stats(shape: tuple[int, ...]) -> EnsembleStats:
    """Sums over no members, for distributions of `shape` ([B, K])."""
    zeros = jnp.zeros(shape, jnp.float32)
    return EnsembleStats(jnp.zeros((), jnp.float32), zeros, zeros, zeros)


def add_member(stats: EnsembleStats, member_logits: jax.Array) -> EnsembleStats:
    """stats plus one member given by its logits [B, K] (pi = softmax; ln pi from log_softmax,
    so a vanishing probability needs no clipping)."""
    log_probs = jax.nn.log_softmax(member_logits.astype(jnp.float32), axis=-1)
    probs = jnp.exp(log_probs)
    return EnsembleStats(
        stats.count + 1.0,
        stats.sum_probs + probs,
        stats.sum_log_probs + log_probs,
        stats.sum_p_log_p + probs * log_probs,
    )


def scan_members(member_logits: Callable[[Any], jax.Array], members: Any) -> EnsembleStats:
    """Statistics of the members whose logits [B, K] are member_logits(x) for each x along the
    leading axis of `members` (e.g. a stack [M, ...] of teacher parameters, or of logits
    [M, B, K]), computed one member at a time under lax.scan."""
    first = jax.tree.map(lambda leaf: leaf[0], members)
    shape = jax.eval_shape(member_logits, first).shape

    def step(stats, member):
        return add_member(stats, member_logits(member)), None

    stats, _ = jax.lax.scan(step, empty_stats(shape), members)
    return stats


def proxy_target(
    stats: EnsembleStats,
    estimator: str = "mkl",
    eps: float = 1e-8,
    max_precision: float | None = None,
) -> ProxyTarget:
    """PD-EnD2's Proxy Dirichlet: mean_probs = pibar, precision = (K - 1) / (2 MKL + eps)
    ("mkl", the paper's) or (K - 1) / (EPKL + eps) ("epkl"), optionally capped at
    max_precision (ours: members that agree exactly otherwise give (K - 1) / eps)."""
    if estimator not in PRECISION_ESTIMATORS:
        raise ValueError(
            f"proxy_target: estimator must be one of {PRECISION_ESTIMATORS}, got {estimator!r}."
        )
    classes = stats.sum_probs.shape[-1]
    spread = 2 * stats.mkl() if estimator == "mkl" else stats.epkl()
    precision = (classes - 1) / (spread + eps)
    if max_precision is not None:
        precision = jnp.minimum(precision, max_precision)
    return ProxyTarget(stats.mean_probs(), precision)
