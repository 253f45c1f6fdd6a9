"""Low-rank-plus-diagonal Gaussian noise, the heteroscedastic part of HET and HET-XL.

For an input phi(x) the noise in an M-dimensional space (logits for HET: M = K; pre-logits for
HET-XL: M = D) is, in the parameter-efficient form of Collier et al. (2021, 2023):
  eps_s = (J^T z_s) * v(x) + d(x) * e_s,   z_s ~ N(0, I_R), e_s ~ N(0, I_M)
  Cov(eps | x) = diag(v) J^T J diag(v) + diag(d^2)
with J [R, M] shared (homoscedastic), v(x) = Dense_M(phi) and d(x) = softplus(Dense_M(phi)) +
min_scale. Two deliberate departures from the public JAX reference layer: e_s is drawn
independently per dimension ([B, S, M], as in the paper and the TF layer; the JAX layer draws one
scalar per sample and broadcasts it, which is just one more rank-1 factor), and J has no bias,
so the noise is zero-mean.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hetclip.heads.partitioning import partitioned
from hetclip.heads.xla_cpu import sum_over_samples, written_once


def _standard_normals(key: jax.Array, batch: int, num_samples: int, rank: int, dim: int, dtype):
    """(z [batch, num_samples, rank], e [batch, num_samples, dim]) from one key."""
    key_low_rank, key_diag = jax.random.split(key)
    z = jax.random.normal(key_low_rank, (batch, num_samples, rank), dtype)
    e = jax.random.normal(key_diag, (batch, num_samples, dim), dtype)
    return z, e


def _is_key_batch(key: jax.Array) -> bool:
    """[B] typed keys or [B, 2] raw uint32 keys (one per example), not a single key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 1
    return key.ndim == 2


def sample_low_rank_noise(
    key: jax.Array, factors: jax.Array, scale: jax.Array, diag: jax.Array, num_samples: int
) -> jax.Array:
    """eps [B, num_samples, M] from J = factors [R, M], v = scale [B, M], d = diag [B, M].

    `key` is one key for the whole batch, or one key per example ([B] keys): then example b's
    noise depends only on key[b], whatever else is in the batch."""
    batch, dim = scale.shape
    rank = factors.shape[0]
    if _is_key_batch(key):
        z, e = jax.vmap(lambda k: _standard_normals(k, 1, num_samples, rank, dim, scale.dtype))(key)
        z, e = z[:, 0], e[:, 0]
    else:
        z, e = _standard_normals(key, batch, num_samples, rank, dim, scale.dtype)
    # One [B*S, R] x [R, M] product rather than a [B, S, R] einsum: the factors' gradient then
    # contracts a single axis, and XLA:CPU needs no transposed copy of the [B, S, M] cotangent
    # for it (4x faster at B = 8, S = 1000, M = 1024 on the 2-core CPU).
    low_rank = z.reshape(-1, rank) @ factors.astype(scale.dtype)
    low_rank = low_rank.reshape(batch, num_samples, dim)
    if num_samples < WRITTEN_OUT_FROM_SAMPLES:
        return _scale_and_add_values(low_rank, e, scale, diag)
    return _scale_and_add(low_rank, e, scale, diag)


# From this many samples per draw, the gradient of v and d is `_scale_and_add`'s: 1.03x faster
# per HET-XL block at S = 1000 (1000 x 1024 draws), 0.97x at S = 16 and 128 (K = 1,000, B = 32).
WRITTEN_OUT_FROM_SAMPLES = 256


def _scale_and_add_values(low_rank: jax.Array, e: jax.Array, scale: jax.Array, diag: jax.Array):
    """[B, S, M] low_rank * v + d * e, v and d [B, M]."""
    return low_rank * scale[:, None] + diag[:, None] * e


@jax.custom_vjp
def _scale_and_add(low_rank: jax.Array, e: jax.Array, scale: jax.Array, diag: jax.Array):
    """`_scale_and_add_values` with its gradient written out, so that the gradients of v and d,
    sums over S, read a written e and are products with ones (hetclip.heads.xla_cpu: autodiff's
    form took 10 ms per [1000, 1024] example and gradient on the 2-core CPU)."""
    return _scale_and_add_values(low_rank, e, scale, diag)


def _scale_and_add_fwd(low_rank, e, scale, diag):
    e = written_once(e, jnp.all(diag > 0))  # d is a standard deviation
    return _scale_and_add(low_rank, e, scale, diag), (low_rank, e, scale, diag)


def _scale_and_add_bwd(residuals, cotangent):
    low_rank, e, scale, diag = residuals
    return (
        cotangent * scale[:, None],
        cotangent * diag[:, None],
        sum_over_samples(cotangent * low_rank),
        sum_over_samples(cotangent * e),
    )


_scale_and_add.defvjp(_scale_and_add_fwd, _scale_and_add_bwd)


def noise_covariance(factors: jax.Array, scale: jax.Array, diag: jax.Array) -> jax.Array:
    """Sigma(x) [B, M, M] = diag(v) J^T J diag(v) + diag(d^2) (for tests and diagnostics)."""
    low_rank = scale[:, :, None] * (factors.T @ factors)[None] * scale[:, None, :]
    return low_rank + jax.vmap(jnp.diag)(diag**2)


class LowRankNoise(nn.Module):
    """Predicts the noise parameters (J, v(x), d(x)) of an M-dimensional Gaussian from phi.

    Attributes:
      dim: M, the dimension the noise lives in.
      num_factors: R, the rank of the input-dependent low-rank part.
      min_scale: floor of the diagonal standard deviation d(x).
      axis_name: logical axis name of the M dimension ("classes" for HET, "noise_embed" for
        HET-XL: a D x D kernel cannot name "embed" twice).
      init_std: per-dimension standard deviation of the noise at initialisation (None: the
        plain initialisers, about 0.7 per dimension). Contrastive models add the noise to unit-
        norm embeddings, where that would drown the signal, so they start it small.
    """

    dim: int
    num_factors: int = 50
    min_scale: float = 1e-3
    axis_name: str = "noise_embed"
    init_std: float | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, phi: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """phi [B, D_in] -> (J [R, M], v [B, M], d [B, M])."""
        factors = self.param(
            "factors",
            partitioned(nn.initializers.normal(1.0 / self.num_factors**0.5), ("factors", None)),
            (self.num_factors, self.dim),
        )
        kernel_init, diag_bias = nn.initializers.lecun_normal(), 0.0
        if self.init_std is not None:
            # Both parts start at about init_std / 2 per dimension for unit-norm phi.
            kernel_init = nn.initializers.normal(self.init_std / 2)
            target = max(self.init_std / 2 - self.min_scale, 1e-6)
            diag_bias = math.log(math.expm1(target))  # softplus^-1
        dense = dict(
            dtype=self.dtype,
            kernel_init=partitioned(kernel_init, ("embed", self.axis_name)),
        )
        zeros = partitioned(nn.initializers.zeros, (self.axis_name,))
        scale = nn.Dense(self.dim, name="scale", bias_init=zeros, **dense)(phi)
        diag_init = partitioned(nn.initializers.constant(diag_bias), (self.axis_name,))
        diag = nn.Dense(self.dim, name="diag", bias_init=diag_init, **dense)(phi)
        diag = nn.softplus(diag) + self.min_scale
        return factors, scale, diag


def sample_keyed_noise(
    key: jax.Array,
    factors: jax.Array,
    scale: jax.Array,
    diag: jax.Array,
    num_samples: int,
    example_ids: jax.Array,
) -> jax.Array:
    """eps [B, num_samples, M] where example b's noise depends only on (key, example_ids[b]).

    Contrastive losses use this so that every device of a mesh can regenerate the same noise for
    any example of the global batch from the example's global index.
    """

    example_keys = jax.vmap(lambda example_id: jax.random.fold_in(key, example_id))(example_ids)
    return sample_low_rank_noise(example_keys, factors, scale, diag, num_samples)
