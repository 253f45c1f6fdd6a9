"""An image tower with a supervised DET / HET / HET-XL head (big_vision names: img, head)."""

from __future__ import annotations

import flax.linen as nn
import jax

from hetclip.heads import Head


class Classifier(nn.Module):
    """batch {"image": [B, H, W, 3]} -> {"phi": [B, D]} pre-logits.

    The head's parameters are created at initialisation (params/head); the loss applies the head
    to phi itself (hetclip.train.objectives), so representations stay per-example.
    """

    img: nn.Module
    head: Head

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False) -> dict[str, jax.Array]:
        phi = self.img(batch["image"], train=train)
        if self.is_initializing():
            self.head(phi, mode="locs")
        return {"phi": phi}
