"""Text transformer tower in big_vision's layout (`Embed_0`, `pos_embedding`, `Encoder_0`,
`head`).

Token ids [B, L] -> token embedding + learned position embedding -> pre-LN encoder with NO
attention mask (padding tokens are attended, as in big_vision: a checkpoint trained that way
must be run that way) -> pooling -> optional projection. Pooling 'last' takes the last position;
with SigLIP's convention the tokenizer pads with the EOS id, so the last position always holds
EOS (data_pipelines.tokenizers, eos="sticky", pad_value=EOS).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from towers.common import (
    Dtype,
    Encoder,
    MAPHead,
    add_learned_positions,
    logical,
    projection_head,
)
from towers.vit import VIT_SIZES

TEXT_POOLS = ("last", "first", "mean", "max", "map")


class TextTransformer(nn.Module):
    """tokens [B, L] int -> embeddings [B, num_classes or width].

    Attributes:
      variant: a size name of towers.vit.VIT_SIZES ("B" = width 768, depth 12, ...).
      vocab_size: rows of the token embedding.
      num_classes: size of the `head` projection (None: none).
      pool: "last" (big_vision's default), "first", "mean", "max" or "map".
      width, depth, mlp_dim, num_heads: override the variant's sizes (e.g. open_clip's 6-layer
        width-256 text tower: variant "Ti", width=256, depth=6, mlp_dim=1024, num_heads=4).
    """

    variant: str = "B"
    vocab_size: int = 32_000
    num_classes: int | None = None
    pool: str = "last"
    width: int | None = None
    depth: int | None = None
    mlp_dim: int | None = None
    num_heads: int | None = None
    dropout: float = 0.0
    scan: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        if self.pool not in TEXT_POOLS:
            raise ValueError(f"pool must be one of {TEXT_POOLS}, got {self.pool!r}.")
        if self.variant not in VIT_SIZES:
            raise ValueError(
                f"Unknown text variant {self.variant!r}; use one of {sorted(VIT_SIZES)}."
            )
        size = dataclasses.replace(
            VIT_SIZES[self.variant],
            **{
                name: value
                for name in ("width", "depth", "mlp_dim", "num_heads")
                if (value := getattr(self, name)) is not None
            },
        )
        x = nn.Embed(
            self.vocab_size,
            size.width,
            name="Embed_0",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=logical(nn.initializers.normal(stddev=1.0), "vocab", "embed"),
        )(tokens)
        x = nn.Dropout(self.dropout)(add_learned_positions(self, x, self.param_dtype), not train)
        x = Encoder(
            size.depth,
            size.mlp_dim,
            size.num_heads,
            self.dropout,
            self.scan,
            self.remat,
            self.dtype,
            self.param_dtype,
            name="Encoder_0",
        )(x, not train)
        if self.pool == "last":
            x = x[:, -1]
        elif self.pool == "first":
            x = x[:, 0]
        elif self.pool == "mean":
            x = x.mean(axis=1)
        elif self.pool == "max":
            x = x.max(axis=1)
        else:
            x = MAPHead(size.num_heads, size.mlp_dim, self.dtype, self.param_dtype)(x)
        if self.num_classes:
            x = projection_head(self.num_classes, False, self.dtype, self.param_dtype)(x)
        return x.astype(jnp.float32)
