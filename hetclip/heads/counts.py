"""Parameter counts of the heads, read off the real modules (no memory is allocated)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hetclip.heads import HEADS


def head_parameter_count(kind: str, num_classes: int, dim: int, num_factors: int = 50) -> int:
    """Parameters of a `kind` head ("det", "het", "hetxl") on [*, dim] pre-logits."""
    kwargs = {} if kind == "det" else {"num_factors": num_factors}
    head = HEADS[kind](num_classes=num_classes, num_samples=1, **kwargs)
    phi = jax.ShapeDtypeStruct((1, dim), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.int32)
    rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
    shapes = jax.eval_shape(lambda p, y: head.init(rngs, p, y), phi, labels)
    return sum(int(x.size) for x in jax.tree.leaves(nn.meta.unbox(shapes)))


def extra_parameters(num_classes: int, dim: int, num_factors: int = 50) -> dict[str, int]:
    """Parameters each heteroscedastic head adds over DET."""
    det = head_parameter_count("det", num_classes, dim)
    return {
        kind: head_parameter_count(kind, num_classes, dim, num_factors) - det
        for kind in ("het", "hetxl")
    }
