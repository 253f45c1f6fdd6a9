"""big_vision-compatible .npz checkpoints: flat '/'-joined keys, sub-tree selection, checks.

big_vision saves np.savez of the flattened parameter tree with '/'-joined, sorted keys; its
trainers put the parameters under a top-level `params/` (optimizer state under `opt/`, old files
use `opt/target/`). A spec "file.npz:img" selects the sub-tree `img` (e.g. the image tower of a
two-tower model). Some releases store encoder blocks stacked on a leading axis (scan layout,
`Transformer/encoderblock/...`) instead of `encoderblock_{i}`: loading converts between the two
to match the model. Loading checks every key and shape against the model and names every
missing, unexpected or mis-shaped key. Files are read with allow_pickle=False, never unpickled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SEPARATOR = "/"
_TRAINER_PREFIXES = ("params/", "opt/target/")
_UNROLLED = re.compile(r"^(.*)/encoderblock_(\d+)/(.*)$")
_SCANNED = re.compile(r"^(.*)/encoderblock/(.*)$")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """{'a': {'b': x}} -> {'a/b': x} (numpy arrays)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        value = getattr(value, "value", value)  # flax nn.Partitioned boxes
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + SEPARATOR))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(SEPARATOR)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_npz(path: str | Path, params: Mapping[str, Any], prefix: str = "params") -> Path:
    """Writes `params` as a big_vision-style .npz (keys under `prefix/`), atomically."""
    path = Path(path)
    flat = flatten(params, f"{prefix}{SEPARATOR}" if prefix else "")
    tmp = path.with_name(path.name + ".tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **dict(sorted(flat.items())))
    os.replace(tmp, path)
    return path


def split_spec(spec: str | Path) -> tuple[Path, str]:
    """'ckpt.npz:img/Transformer' -> (Path('ckpt.npz'), 'img/Transformer')."""
    text = str(spec)
    marker = text.rfind(".npz:")
    if marker < 0:
        return Path(text), ""
    return Path(text[: marker + 4]), text[marker + 5 :].strip(SEPARATOR)


def read_npz(spec: str | Path) -> dict[str, np.ndarray]:
    """Flat {key: array} of the selected sub-tree, trainer prefixes stripped."""
    path, subtree = split_spec(spec)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    with np.load(path, allow_pickle=False) as data:
        flat = {key: data[key] for key in data.files}
    for prefix in _TRAINER_PREFIXES:
        if any(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
            break
    if subtree:
        start = subtree + SEPARATOR
        selected = {k[len(start) :]: v for k, v in flat.items() if k.startswith(start)}
        if not selected:
            tops = sorted({k.split(SEPARATOR)[0] for k in flat})
            raise KeyError(f"Checkpoint {path} has no sub-tree {subtree!r}; top level: {tops}.")
        flat = selected
    return flat


def _to_scanned(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    groups: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    out = {}
    for key, value in flat.items():
        match = _UNROLLED.match(key)
        if match:
            groups.setdefault((match.group(1), match.group(3)), {})[int(match.group(2))] = value
        else:
            out[key] = value
    for (head, tail), layers in groups.items():
        out[f"{head}/encoderblock/{tail}"] = np.stack([layers[i] for i in sorted(layers)])
    return out


def _to_unrolled(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in flat.items():
        match = _SCANNED.match(key)
        if match:
            for i, layer in enumerate(value):
                out[f"{match.group(1)}/encoderblock_{i}/{match.group(2)}"] = layer
        else:
            out[key] = value
    return out


def match_layout(flat: dict[str, np.ndarray], expected_keys) -> dict[str, np.ndarray]:
    """Converts scan <-> unrolled encoder layouts so `flat` uses the model's layout."""
    expected_keys = set(expected_keys)
    wants_scan = any(_SCANNED.match(k) for k in expected_keys)
    has_scan = any(_SCANNED.match(k) for k in flat)
    if wants_scan and not has_scan:
        return _to_scanned(flat)
    if has_scan and not wants_scan:
        return _to_unrolled(flat)
    return flat


def load_params(spec: str | Path, reference: Mapping[str, Any]) -> dict[str, Any]:
    """Loads `spec` ("file.npz[:subtree]") into the structure of `reference`, checking every
    key and shape. `reference` is the model's params tree, or its variables {"params": tree}
    (from init or jax.eval_shape); the result has the same form."""
    if set(reference) == {"params"}:
        return {"params": load_params(spec, reference["params"])}
    flat_ref = flatten_shapes(reference)
    flat = match_layout(read_npz(spec), flat_ref)
    missing = sorted(set(flat_ref) - set(flat))
    unexpected = sorted(set(flat) - set(flat_ref))
    mis_shaped = [
        f"{k}: checkpoint {tuple(flat[k].shape)} vs model {flat_ref[k]}"
        for k in sorted(set(flat) & set(flat_ref))
        if tuple(flat[k].shape) != flat_ref[k]
    ]
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mis_shaped:
            problems.append(f"shape mismatches [{'; '.join(mis_shaped)}]")
        raise ValueError(f"Checkpoint {spec} does not match the model: " + ", ".join(problems))
    return unflatten({k: flat[k] for k in flat_ref})


def flatten_shapes(tree: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """{'a/b': shape} of a tree of arrays or ShapeDtypeStructs (flax boxes unwrapped)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        value = getattr(value, "value", value)  # flax nn.Partitioned boxes
        if isinstance(value, Mapping):
            shapes.update(flatten_shapes(value, name + SEPARATOR))
        else:
            shapes[name] = tuple(value.shape)
    return shapes
