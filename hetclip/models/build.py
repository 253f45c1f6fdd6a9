"""Flax modules from a config's `model` section (see hetclip/configs/*.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

MODEL_KINDS = ("two_towers", "classifier")
IMAGE_TOWERS = ("vit",)
TEXT_TOWERS = ("text_transformer", "minilm")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _dtype(name: str) -> Any:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def _options(spec: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    options = {k: v for k, v in dict(spec).items() if k != "kind"}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown {what} option(s) {unknown}; allowed: {sorted(allowed)}.")
    for key in ("dtype", "param_dtype"):
        if key in options:
            options[key] = _dtype(options[key])
    return options


def image_tower(spec: Mapping[str, Any], embed_dim: int | None) -> nn.Module:
    """A ViT from {"kind": "vit", "variant": "B/16", "pool": "gap", ...}; projects to embed_dim."""
    from towers.vit import ViT

    kind = spec.get("kind", "vit")
    if kind not in IMAGE_TOWERS:
        raise ValueError(f"Unknown image tower kind {kind!r}; use one of {IMAGE_TOWERS}.")
    allowed = ("variant", "pool", "dropout", "scan", "remat", "dtype", "param_dtype")
    # A zero-initialised projection would give all-zero embeddings, which cannot be normalised.
    return ViT(
        num_classes=embed_dim,
        head_zero_init=False,
        name="img",
        **_options(spec, allowed, "image tower"),
    )


def text_tower(spec: Mapping[str, Any], embed_dim: int) -> nn.Module:
    """The big_vision text transformer, or the packaged MiniLM sentence encoder (LiT)."""
    kind = spec.get("kind", "text_transformer")
    if kind == "minilm":
        from towers.bert import BertConfig, BertTower, minilm_dir

        config = BertConfig.from_json(minilm_dir() / "config.json")
        if config.hidden_size != embed_dim:
            raise ValueError(
                f"The MiniLM text tower gives {config.hidden_size}-d embeddings; set "
                f"model.embed_dim={config.hidden_size} (the image tower projects to it)."
            )
        return BertTower(config, name="txt", **_options(spec, ("dtype",), "MiniLM tower"))
    if kind != "text_transformer":
        raise ValueError(f"Unknown text tower kind {kind!r}; use one of {TEXT_TOWERS}.")
    from towers.text_transformer import TextTransformer

    allowed = (
        *("variant", "width", "depth", "mlp_dim", "num_heads", "vocab_size", "pool"),
        *("dropout", "scan", "remat", "dtype", "param_dtype"),
    )
    return TextTransformer(
        num_classes=embed_dim, name="txt", **_options(spec, allowed, "text tower")
    )


def build_model(model: Mapping[str, Any]) -> nn.Module:
    """The module a config's `model` section describes; errors name the bad key."""
    kind = model.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model.kind must be one of {MODEL_KINDS}, got {kind!r}.")
    if kind == "two_towers":
        from hetclip.models.two_towers import NoiseSpec, TwoTowers

        embed_dim = int(model["embed_dim"])
        noise = {
            side: NoiseSpec(**dict(model[f"{side}_noise"])) if model.get(f"{side}_noise") else None
            for side in ("image", "text")
        }
        return TwoTowers(
            img=image_tower(model["image"], embed_dim),
            txt=text_tower(model["text"], embed_dim),
            logit_scale_init=float(model.get("logit_scale_init", 2.302585)),
            bias_init=None if model.get("bias_init") is None else float(model["bias_init"]),
            image_noise=noise["image"],
            text_noise=noise["text"],
        )
    from hetclip.heads import HEADS
    from hetclip.models.classifier import Classifier

    head = dict(model["head"])
    head_kind = head.pop("kind", "det")
    if head_kind not in HEADS:
        raise ValueError(f"model.head.kind must be one of {sorted(HEADS)}, got {head_kind!r}.")
    return Classifier(
        img=image_tower(model["image"], model.get("embed_dim")),
        head=HEADS[head_kind](name="head", **head),
    )
