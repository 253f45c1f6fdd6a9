"""Device meshes and placing input batches on them.

Mesh axes follow the usual names: `data` (pure data parallelism), `fsdp` (data parallelism with
sharded parameters) and `model` (tensor parallelism). Batches are split over data x fsdp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DEFAULT_AXES = {"data": -1, "fsdp": 1, "model": 1}
BATCH_AXES = ("data", "fsdp")


def make_mesh(
    axes: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A mesh with named axes; one size may be -1 (all remaining devices).

    Built with jax.sharding.Mesh directly, so axis types are Auto (GSPMD-style propagation);
    jax.make_mesh would default to Explicit axes and reject sharded contractions.
    """
    axes = dict(axes or DEFAULT_AXES)
    devices = list(devices if devices is not None else jax.devices())
    known = int(np.prod([s for s in axes.values() if s != -1]))
    free = [name for name, size in axes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"At most one mesh axis may be -1, got {free}.")
    if free:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot fill mesh axes {axes}.")
        axes[free[0]] = len(devices) // known
    if int(np.prod(list(axes.values()))) != len(devices):
        raise ValueError(
            f"Mesh axes {axes} need {int(np.prod(list(axes.values())))} devices; "
            f"there are {len(devices)}. Use -1 for one axis to take the rest."
        )
    grid = np.asarray(devices, dtype=object).reshape(tuple(axes.values()))
    return Mesh(grid, tuple(axes))


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES) -> NamedSharding:
    """Leading (batch) dimension split over `batch_axes`, the rest replicated."""
    present = tuple(a for a in batch_axes if a in mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(present))


def global_batch(
    local_batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES
) -> dict[str, jax.Array]:
    """Assembles each process's [B/P, ...] numeric arrays into global [B, ...] jax.Arrays.

    Non-numeric entries (ids, raw strings) stay on the host and are dropped here.
    """
    sharding = batch_sharding(mesh, batch_axes)
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in local_batch.items()
        if np.asarray(value).dtype.kind in "biuf"
    }


# Logical axis name -> mesh axis (or axes). Parameters carry logical names (see
# hetclip.heads.partitioning); a name without a rule, or whose mesh axis the mesh lacks, is
# replicated.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("classes", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("vocab", "model"),
    ("factors", None),
)


def _rules_for(mesh: Mesh, rules) -> tuple:
    kept = []
    for name, axes in rules:
        if axes is None:
            kept.append((name, None))
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        present = tuple(a for a in axes if a in mesh.axis_names and mesh.shape[a] > 1)
        kept.append((name, present[0] if len(present) == 1 else (present or None)))
    return tuple(kept)


def param_shardings(boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a params tree whose leaves carry logical axis names (flax boxes)."""
    import flax.linen as nn

    specs = nn.get_partition_spec(boxed_params)
    return nn.logical_to_mesh_sharding(specs, mesh, _rules_for(mesh, rules))


def place_params(boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
    """Unboxes `boxed_params` and puts each leaf on the mesh as its logical names say."""
    import flax.linen as nn

    shardings = param_shardings(boxed_params, mesh, rules)
    return jax.device_put(nn.meta.unbox(boxed_params), shardings)
