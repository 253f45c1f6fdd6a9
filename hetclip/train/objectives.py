"""What a run minimises, split as encode (per-example) + loss (over the whole global batch).

An Objective has two pure functions:
  encode(params, batch, dropout_key, train) -> reps   every leaf [B, ...], one row per example
  loss(params, reps, batch, noise_key) -> (scalar, metrics)
The split is what makes gradient caching (hetclip.train.accumulate) exact: the loss sees every
example's representation at once (all negatives of the global batch for contrastive runs), and
the towers can be run a micro-batch at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from hetclip.heads.temperature import Temperature
from hetclip.losses import sharded
from hetclip.losses.het_contrastive import NoiseParams

LOSS_KINDS = ("clip", "siglip")


@dataclasses.dataclass(frozen=True)
class Objective:
    encode: Callable[..., dict[str, jax.Array]]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def model_encoder(model: nn.Module) -> Callable[..., dict[str, jax.Array]]:
    """An Objective's encode: the model's outputs for the batch's image / text inputs."""

    def encode(params, batch, dropout_key, train: bool = True):
        inputs = {k: v for k, v in batch.items() if k in ("image", "text")}
        return model.apply({"params": params}, inputs, train=train, rngs={"dropout": dropout_key})

    return encode


def _noise(params, reps, prefix: str) -> NoiseParams | None:
    if f"{prefix}_noise" not in params:
        return None
    factors = params[f"{prefix}_noise"]["factors"]
    return NoiseParams(factors, reps[f"{prefix}_scale"], reps[f"{prefix}_diag"])


def contrastive_objective(
    model: nn.Module, loss_config: Mapping[str, Any], mesh: Mesh
) -> Objective:
    """CLIP / SigLIP, with HET-XL noise when the model has noise layers (sharded over `mesh`).

    loss_config: kind ("clip" | "siglip"), num_samples (S of the HET-XL forms), max_chunk,
    column_block (softmax: visit the global batch that many columns at a time), exchange
    (sigmoid: "gather" | "ring")."""
    kind = loss_config.get("kind", "clip")
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got {kind!r}.")
    num_samples = int(loss_config.get("num_samples", 16))
    max_chunk = int(loss_config.get("max_chunk", 8))
    column_block = loss_config.get("column_block")
    exchange = loss_config.get("exchange", "gather")

    def loss(params, reps, batch, noise_key):
        del batch
        zimg, ztxt, log_scale = reps["zimg"], reps["ztxt"], params["t"][0]
        bias = params["b"][0] if "b" in params else None
        image_noise, text_noise = _noise(params, reps, "img"), _noise(params, reps, "txt")
        if kind == "siglip" and bias is None:
            raise ValueError("loss.kind='siglip' needs a bias: set model.bias_init (e.g. -10).")
        hetero = image_noise is not None or text_noise is not None
        noise = dict(image_noise=image_noise, text_noise=text_noise)
        mc = dict(num_samples=num_samples, max_chunk=max_chunk)
        if kind == "clip" and hetero:
            value = sharded.sharded_hetxl_clip_loss(
                mesh, zimg, ztxt, log_scale, noise_key, **noise, **mc, column_block=column_block
            )
        elif kind == "clip":
            value = sharded.sharded_clip_loss(
                mesh, zimg, ztxt, log_scale, column_block=column_block
            )
        elif hetero:
            value = sharded.sharded_hetxl_siglip_loss(
                mesh, zimg, ztxt, log_scale, bias, noise_key, **noise, **mc, exchange=exchange
            )
        else:
            value = sharded.sharded_siglip_loss(
                mesh, zimg, ztxt, log_scale, bias, exchange=exchange
            )
        metrics = {"logit_scale": jnp.exp(log_scale)}
        if bias is not None:
            metrics["bias"] = bias
        for prefix in ("img", "txt"):
            if f"{prefix}_diag" in reps:
                # Root-mean-square noise std per dimension, a readable "how noisy" figure.
                var = reps[f"{prefix}_scale"] ** 2 + reps[f"{prefix}_diag"] ** 2
                metrics[f"{prefix}_noise_std"] = jnp.sqrt(var.mean())
        return value, metrics

    return Objective(model_encoder(model), loss)


def supervised_objective(model: nn.Module, loss_config: Mapping[str, Any]) -> Objective:
    """Negative MC log-likelihood of the head (softmax: labels [B] int; sigmoid: [B, K] or [B])."""
    head = model.head.clone(parent=None, name=None)
    num_samples = loss_config.get("num_samples")

    def loss(params, reps, batch, noise_key):
        labels = batch["labels"] if "labels" in batch else batch["label"]
        if head.form == "sigmoid" and labels.ndim == 1:
            labels = jax.nn.one_hot(labels, head.num_classes)
        # The batch mean in one pass: value and gradient together (hetclip.heads.fused).
        mean_log_likelihood = head.apply(
            {"params": params["head"]},
            reps["phi"],
            labels,
            mode="mean_log_likelihood",
            num_samples=num_samples,
            key=noise_key,
        )
        metrics = {}
        if "temperature" in params["head"]:
            metrics["temperature"] = Temperature(
                head.temperature, True, head.temperature_bounds
            ).apply({"params": params["head"]["temperature"]})
        return -mean_log_likelihood, metrics

    return Objective(model_encoder(model), loss)


def make_objective(model: nn.Module, config: Mapping[str, Any], mesh: Mesh) -> Objective:
    loss_config = dict(config.get("loss", {}))
    if config["model"]["kind"] == "two_towers":
        return contrastive_objective(model, loss_config, mesh)
    return supervised_objective(model, loss_config)
