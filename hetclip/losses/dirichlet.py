"""Dirichlet students for ensemble distribution distillation: EnD, EnD2 and PD-EnD2 losses.

A student ("prior network") maps an input to a Dirichlet over the class simplex with
concentrations alpha = exp(z) + 1 for logits z [B, K] (the offset 1 of every published
PD-EnD2 run), alpha0 = sum_k alpha_k. Its mean prediction is softmax(z) (= (alpha - 1) /
(alpha0 - K)); alpha carries the ensemble's disagreement (evals/uncertainty.py measures it).

Losses, each per example [B], against the teacher statistics of
hetclip/losses/ensemble_targets.py (M member distributions pi^(m) [B, K]):
- EnD:  KL(pibar || softmax(z)), pibar = mean_m pi^(m) (distils the mean only);
- EnD2: mean_m -ln Dir(pi^(m); alpha) (Malinin et al. 2020), which breaks down with many
  classes: the tail classes' log-probabilities dominate its gradient;
- PD-EnD2 (Ryabinin, Malinin & Gales, NeurIPS 2021): the reverse KL from the student to a
  Proxy Dirichlet target Dir(beta), beta_k = pibar_k beta0_hat + 1 with the precision beta0_hat
  estimated from the members' spread. KL(Dir(alpha) || Dir(beta)) / beta0_hat equals, up to a
  constant in alpha,
      L = -sum_k pibar_k (psi(alpha_k) - psi(alpha0)) - H[Dir(alpha)] / beta0_hat.
  We divide by beta0_hat (the exact reverse KL, scaled so that examples of every precision
  weigh alike); the reference implementation divides by beta0_hat + K, a slightly sharper
  target. At the optimum alpha = beta, so softmax(z) = pibar exactly.
psi is the digamma function, H the Dirichlet's differential entropy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, xlogy

from hetclip.losses.ensemble_targets import ProxyTarget

# exp(z) is clipped at exp(MAX_LOG_CONCENTRATION) (about 1e13) so that alpha0 stays finite in
# float32 for K up to ~1e25; no useful student is that confident.
MAX_LOG_CONCENTRATION = 30.0


def concentrations(logits: jax.Array, max_log: float = MAX_LOG_CONCENTRATION) -> jax.Array:
    """alpha = exp(min(z, max_log)) + 1: logits [..., K] -> [..., K] in float32."""
    return jnp.exp(jnp.minimum(logits.astype(jnp.float32), max_log)) + 1.0


def dirichlet_entropy(alpha: jax.Array) -> jax.Array:
    """H[Dir(alpha)] = sum_k lnG(alpha_k) - lnG(alpha0) - sum_k (alpha_k - 1)(psi(alpha_k) -
    psi(alpha0)): alpha [..., K] -> [...] in nats."""
    alpha0 = alpha.sum(-1)
    spread = digamma(alpha) - digamma(alpha0)[..., None]
    return gammaln(alpha).sum(-1) - gammaln(alpha0) - ((alpha - 1) * spread).sum(-1)


def dirichlet_kl(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """KL(Dir(alpha) || Dir(beta)): alpha, beta [..., K] -> [...]."""
    alpha0, beta0 = alpha.sum(-1), beta.sum(-1)
    spread = digamma(alpha) - digamma(alpha0)[..., None]
    return (
        gammaln(alpha0)
        - gammaln(alpha).sum(-1)
        - gammaln(beta0)
        + gammaln(beta).sum(-1)
        + ((alpha - beta) * spread).sum(-1)
    )


def dirichlet_log_density(log_probs: jax.Array, alpha: jax.Array) -> jax.Array:
    """ln Dir(p; alpha) = lnG(alpha0) - sum_k lnG(alpha_k) + sum_k (alpha_k - 1) ln p_k, given
    ln p [..., K] (log-probabilities, so that no p_k needs clipping) -> [...]."""
    return gammaln(alpha.sum(-1)) - gammaln(alpha).sum(-1) + ((alpha - 1) * log_probs).sum(-1)


def end_loss(student_logits: jax.Array, mean_probs: jax.Array) -> jax.Array:
    """EnD: KL(pibar || softmax(z)) per example: z [B, K], pibar [B, K] (EnsembleStats.
    mean_probs) -> [B]."""
    mean_probs = jax.lax.stop_gradient(mean_probs)
    log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
    return (xlogy(mean_probs, mean_probs) - mean_probs * log_student).sum(-1)


def end2_loss(student_logits: jax.Array, mean_log_probs: jax.Array) -> jax.Array:
    """EnD2: mean_m -ln Dir(pi^(m); alpha) per example, from the members' mean log-probability
    mean_m ln pi^(m) [B, K] (EnsembleStats.mean_log_probs; the density is linear in ln p):
    z [B, K] -> [B]."""
    mean_log_probs = jax.lax.stop_gradient(mean_log_probs)
    return -dirichlet_log_density(mean_log_probs, concentrations(student_logits))


def proxy_dirichlet_loss(student_logits: jax.Array, target: ProxyTarget) -> jax.Array:
    """PD-EnD2: KL(Dir(alpha) || Dir(beta)) / beta0_hat up to a constant in alpha, per example
    (module docstring): z [B, K] -> [B]. The target is not differentiated."""
    mean_probs = jax.lax.stop_gradient(target.mean_probs)
    precision = jax.lax.stop_gradient(target.precision)
    alpha = concentrations(student_logits)
    expected_log_probs = digamma(alpha) - digamma(alpha.sum(-1))[..., None]  # E_Dir[ln p_k]
    return -(mean_probs * expected_log_probs).sum(-1) - dirichlet_entropy(alpha) / precision
