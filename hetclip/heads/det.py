"""DET: the deterministic linear classifier, logits = phi W + b (0 extra parameters)."""

from __future__ import annotations

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

    num_samples: int = 1

    def noisy_logits(self, phi):
        _, _, locs = self.classifier(phi)
        return det_logits, {"locs": locs}, jnp.float32(1.0)

    def __call__(self, phi, labels=None, *, mode="log_likelihood", num_samples=None, key=None):
        key = jax.random.PRNGKey(0) if key is None else key  # unused: DET draws no noise
        return super().__call__(phi, labels, mode=mode, num_samples=1, key=key)
