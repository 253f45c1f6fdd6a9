"""Logical axis names on parameters, so sharding rules can place them on mesh axes.

Names used by heads: "embed" (representation D), "classes" (K), "factors" (R), "noise_embed"
(the output side of HET-XL's D x D noise layers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn


def partitioned(init: Callable, names: Sequence[str | None]) -> Callable:
    """Wraps an initializer so the parameter carries logical axis `names`."""
    return nn.with_logical_partitioning(init, tuple(names))
