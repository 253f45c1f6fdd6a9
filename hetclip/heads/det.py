"""DET: the deterministic linear classifier, logits = phi W + b (0 extra parameters)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from hetclip.heads.base import Head


def det_logits(params, key: jax.Array, chunk_size: int) -> jax.Array:
    """[B, C, K]: the same logits for every "sample" (there is no noise)."""
    del key
    locs = params["locs"]
    return jnp.broadcast_to(locs[:, None], (locs.shape[0], chunk_size, locs.shape[1]))


class DetHead(Head):
    """DET. Its MC modes are exact with S = 1, which is what they use whatever S is asked."""

    stochastic: ClassVar[bool] = False
    num_samples: int = 1

    def noisy_logits(self, phi, num_samples):
        del num_samples  # always one
        _, _, locs = self.classifier(phi)
        return det_logits, {"locs": locs}, jnp.float32(1.0)
