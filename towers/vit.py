"""Vision Transformer (Dosovitskiy et al. 2021) in big_vision's parameter layout.

Patchify with a strided convolution (`embedding`), add a learned position embedding
(`pos_embedding`, [1, N, D]) BEFORE prepending the class token (`cls`, only with pool 'tok'),
run the pre-LN encoder (`Transformer`), pool ('tok', 'gap' or 'map' with `MAPHead_0`), and
optionally project (`head`). Variants are named like big_vision's: "B/16" = width 768, depth 12,
MLP 3072, 12 heads, patch 16; any patch size is allowed ("S/14", "B/8", ...).
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


@dataclasses.dataclass(frozen=True)
class ViTSize:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int


VIT_SIZES = {
    "mu": ViTSize(32, 1, 128, 2),
    "Ti": ViTSize(192, 12, 768, 3),
    "S": ViTSize(384, 12, 1536, 6),
    "M": ViTSize(512, 12, 2048, 8),
    "B": ViTSize(768, 12, 3072, 12),
    "L": ViTSize(1024, 24, 4096, 16),
    "So400m": ViTSize(1152, 27, 4304, 16),
    "H": ViTSize(1280, 32, 5120, 16),
    "g": ViTSize(1408, 40, 6144, 16),
    "G": ViTSize(1664, 48, 8192, 16),
    "e": ViTSize(1792, 56, 15360, 16),
}
POOLS = ("tok", "gap", "map")


def parse_variant(variant: str) -> tuple[ViTSize, tuple[int, int]]:
    """'B/16' -> (ViT-B size, (16, 16) patch)."""
    name, _, patch = variant.partition("/")
    if name not in VIT_SIZES or not patch.isdigit():
        raise ValueError(
            f"Unknown ViT variant {variant!r}: use NAME/PATCH with NAME in {sorted(VIT_SIZES)}, "
            "e.g. 'B/16'."
        )
    return VIT_SIZES[name], (int(patch), int(patch))


class ViT(nn.Module):
    """images [B, H, W, 3] -> embeddings [B, num_classes or width].

    Attributes:
      variant: "B/16" and the like (see VIT_SIZES); or set width/depth/... explicitly.
      num_classes: size of the `head` projection (None: no projection, return the pooled token).
      pool: "tok" (class token), "gap" (mean over tokens) or "map" (attention pooling).
      dropout: dropout rate inside the encoder.
      scan, remat: see towers.common.Encoder.
      dtype: compute dtype (float32 or bfloat16); param_dtype: storage dtype of parameters.
    """

    variant: str = "B/16"
    num_classes: int | None = None
    pool: str = "gap"
    dropout: float = 0.0
    scan: bool = False
    remat: bool = False
    head_zero_init: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}.")
        size, patch = parse_variant(self.variant)
        x = nn.Conv(
            size.width,
            patch,
            strides=patch,
            padding="VALID",
            name="embedding",
            kernel_init=logical(nn.initializers.lecun_normal(), None, None, None, "embed"),
            bias_init=logical(nn.initializers.zeros, "embed"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )(images.astype(self.dtype))
        batch, height, width, channels = x.shape
        x = x.reshape(batch, height * width, channels)
        x = add_learned_positions(self, x, self.param_dtype)
        if self.pool == "tok":
            cls = self.param(
                "cls",
                logical(nn.initializers.zeros, None, None, "embed"),
                (1, 1, channels),
                self.param_dtype,
            )
            x = jnp.concatenate([jnp.tile(cls.astype(self.dtype), (batch, 1, 1)), x], axis=1)
        x = nn.Dropout(self.dropout)(x, not train)
        x = Encoder(
            size.depth,
            size.mlp_dim,
            size.num_heads,
            self.dropout,
            self.scan,
            self.remat,
            self.dtype,
            self.param_dtype,
            name="Transformer",
        )(x, not train)
        if self.pool == "map":
            x = MAPHead(size.num_heads, size.mlp_dim, self.dtype, self.param_dtype)(x)
        elif self.pool == "gap":
            x = x.mean(axis=1)
        else:
            x = x[:, 0]
        if self.num_classes:
            x = projection_head(
                self.num_classes, self.head_zero_init, self.dtype, self.param_dtype
            )(x)
        return x.astype(jnp.float32)
