"""Image and text towers trained contrastively, with optional HET-XL noise on the embeddings.

Parameter names follow big_vision's two_towers model: params/img (image tower), params/txt (text
tower), params/t (log of the logit scale), params/b (sigmoid bias). HET-XL noise predictors live
in params/img_noise and params/txt_noise (J [R, D] factors and the v(x), d(x) layers of
hetclip.heads.noise, fed with the side's normalised embedding).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hetclip.heads.noise import LowRankNoise
from hetclip.losses.contrastive import l2_normalize


class NoiseSpec(NamedTuple):
    """HET-XL embedding noise of one side: rank R, per-dimension start std, diagonal floor."""

    num_factors: int = 16
    init_std: float = 0.01
    min_scale: float = 1e-4


class TwoTowers(nn.Module):
    """batch {"image": [B, H, W, 3], "text": [B, L]} -> per-example representations.

    Returns {"zimg": [B, D], "ztxt": [B, D]} (unit norm) plus, for each noisy side,
    "{img,txt}_scale" and "{img,txt}_diag" [B, D] (v(x), d(x)). The shared factors J and the
    logit scale are parameters, read by the loss (hetclip.train.objectives), so the output is
    purely per-example and gradient caching can split it along the batch.
    Either input may be missing (image-only or text-only encoding for evaluation).
    """

    img: nn.Module
    txt: nn.Module
    logit_scale_init: float = 2.302585  # log(10), big_vision's SigLIP start; CLIP uses log(1/0.07)
    bias_init: float | None = None
    image_noise: NoiseSpec | None = None
    text_noise: NoiseSpec | None = None

    def _noise(self, embeddings: jax.Array, spec: NoiseSpec | None, prefix: str, out: dict):
        if spec is None:
            return
        _, scale, diag = LowRankNoise(
            embeddings.shape[-1],
            spec.num_factors,
            spec.min_scale,
            init_std=spec.init_std,
            name=f"{prefix}_noise",
        )(embeddings)
        out[f"{prefix}_scale"], out[f"{prefix}_diag"] = scale, diag

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False) -> dict[str, jax.Array]:
        self.param("t", nn.initializers.constant(self.logit_scale_init), (1,), jnp.float32)
        if self.bias_init is not None:
            self.param("b", nn.initializers.constant(self.bias_init), (1,), jnp.float32)
        out: dict[str, jax.Array] = {}
        if "image" in batch:
            out["zimg"] = l2_normalize(self.img(batch["image"], train=train))
            self._noise(out["zimg"], self.image_noise, "img", out)
        if "text" in batch:
            out["ztxt"] = l2_normalize(self.txt(batch["text"], train=train).astype(jnp.float32))
            self._noise(out["ztxt"], self.text_noise, "txt", out)
        return out
