"""The softmax / sigmoid temperature tau of heteroscedastic heads.

HET tunes tau on held-out data; HET-XL learns it on the training data with a bounded
parameterisation (Collier et al. 2023): tau = lower + (upper - lower) * sigmoid(p), p initialised
to 0, so tau starts at the middle of [lower, upper] (2.525 for the reference bounds 0.05 and 5.0).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Temperature(nn.Module):
    """Returns tau: `value` when not learned, else the bounded learned parameter."""

    value: float = 1.0
    learned: bool = False
    bounds: tuple[float, float] = (0.05, 5.0)

    @nn.compact
    def __call__(self) -> jax.Array:
        if not self.learned:
            return jnp.asarray(self.value, jnp.float32)
        lower, upper = self.bounds
        if not 0 < lower < upper:
            raise ValueError(
                f"Temperature bounds must satisfy 0 < lower < upper, got {self.bounds}."
            )
        pre = self.param("pre_sigmoid", nn.initializers.zeros, ())
        return lower + (upper - lower) * jax.nn.sigmoid(pre)
