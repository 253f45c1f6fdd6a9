"""Optimiser and learning-rate schedule from a config's `optim` and `schedule` sections.

The seed recipe (HET-XL, ImageNet-21k): Adam b1 0.9, b2 0.999, decoupled weight decay 0.1,
gradient clipping at global norm 1.0, 10k linear warm-up steps from 1e-5 to 6e-4, then decay.
Parameter groups: `freeze` (regexes over "a/b/c" parameter paths) get no updates at all;
weight decay applies to matrices only (biases, norms, scales and scalars are exempt) and never
to paths matching `no_decay`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

DECAYS = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")


def schedule(config: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """Linear warm-up from `init_value` to `peak`, then `decay` down to `end_value`."""
    peak = float(config.get("peak", 1e-3))
    init = float(config.get("init_value", 0.0))
    end = float(config.get("end_value", 0.0))
    warmup = int(config.get("warmup_steps", 0))
    decay = config.get("decay", "cosine")
    if decay not in DECAYS:
        raise ValueError(f"schedule.decay must be one of {DECAYS}, got {decay!r}.")
    if warmup > total_steps:
        raise ValueError(
            f"schedule.warmup_steps={warmup} exceeds total_steps={total_steps}; lower one of them."
        )
    rest = max(total_steps - warmup, 1)
    if decay == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=end / peak if peak else 0.0)
    elif decay == "linear":
        after = optax.linear_schedule(peak, end, rest)
    else:
        after = optax.constant_schedule(peak)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(init, peak, warmup), after], [warmup])


def path_name(path) -> str:
    """'img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel' for a tree path."""
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def _compile(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"{what} pattern {pattern!r} is not a valid regex: {error}") from None
    return compiled


def frozen_mask(params, freeze: Sequence[str]):
    """Tree of bools: True where the parameter's path fully matches one of `freeze`."""
    patterns = _compile(freeze, "freeze")
    mask = jax.tree_util.tree_map_with_path(
        lambda path, _: any(p.fullmatch(path_name(path)) for p in patterns), params
    )
    if patterns and not any(jax.tree.leaves(mask)):
        names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)][:5]
        raise ValueError(
            f"freeze patterns {list(freeze)} match no parameter; paths look like {names}."
        )
    return mask


def decay_mask(params, no_decay: Sequence[str]):
    patterns = _compile(no_decay, "no_decay")
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.ndim >= 2 and not any(p.fullmatch(path_name(path)) for p in patterns),
        params,
    )


def optimizer(
    config: Mapping[str, Any], lr: optax.Schedule, params, freeze: Sequence[str] = ()
) -> optax.GradientTransformation:
    """Clip -> Adam(W) / SGD with decoupled decay on matrices; frozen leaves get zero updates."""
    name = config.get("name", "adamw")
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {name!r}.")
    parts = []
    if config.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(float(config["grad_clip_norm"])))
    if name == "sgd":
        parts.append(optax.trace(float(config.get("momentum", 0.9))))
    else:
        parts.append(
            optax.scale_by_adam(float(config.get("b1", 0.9)), float(config.get("b2", 0.999)))
        )
    weight_decay = float(config.get("weight_decay", 0.0)) if name != "adam" else 0.0
    if weight_decay:
        parts.append(
            optax.add_decayed_weights(weight_decay, decay_mask(params, config.get("no_decay", ())))
        )
    parts.append(optax.scale_by_learning_rate(lr))
    tx = optax.chain(*parts)
    mask = frozen_mask(params, freeze)
    if not any(jax.tree.leaves(mask)):
        return tx
    labels = jax.tree.map(lambda frozen: "frozen" if frozen else "trained", mask)
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
