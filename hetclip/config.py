"""Configs as Python files returning an ml_collections.ConfigDict, big_vision style.

  load_config("hetclip/configs/default.py:batch=64,res=32")
  apply_overrides(config, ["input.batch_size=32", "seed=1"])

A config file defines `get_config(arg=None)`; the text after ':' reaches it as a ConfigDict of
the `key=value` pairs (values parsed as Python literals, else kept as strings, a bare key means
True). Shipped configs can be named relative to hetclip/configs ("default.py" or "default").
Overrides set existing keys only: an unknown key is an error naming the nearest valid key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_collections

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def parse_literal(text: str) -> Any:
    """'3' -> 3, '1e-3' -> 0.001, '(1,2)' -> (1, 2), 'True' -> True, 'abc' -> 'abc'."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_config_arg(arg: str) -> ml_collections.ConfigDict:
    """'a=1,b=x,flag' -> ConfigDict(a=1, b='x', flag=True). Commas inside brackets are kept."""
    values: dict[str, Any] = {}
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(arg):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(arg[start:i])
            start = i + 1
    parts.append(arg[start:])
    for part in filter(None, (p.strip() for p in parts)):
        key, sep, value = part.partition("=")
        values[key.strip()] = parse_literal(value.strip()) if sep else True
    return ml_collections.ConfigDict(values)


def resolve_config_path(path: str) -> Path:
    candidates = [Path(path).expanduser()]
    name = Path(path).name
    candidates += [CONFIG_DIR / name, CONFIG_DIR / f"{name}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
    raise FileNotFoundError(f"Config file {path!r} not found. Shipped configs: {shipped}.")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:key=val,...]` and returns its ConfigDict."""
    path_text, _, arg = spec.partition(":")
    path = resolve_config_path(path_text)
    module_spec = importlib.util.spec_from_file_location(f"hetclip_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path} defines no get_config().")
    takes_arg = bool(inspect.signature(module.get_config).parameters)
    if arg and not takes_arg:
        raise ValueError(f"Config {path} takes no arguments, but got {arg!r}.")
    config = module.get_config(parse_config_arg(arg)) if takes_arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, dotted + "."))
    return keys


def _unknown_key(config: ml_collections.ConfigDict, dotted: str) -> KeyError:
    near = difflib.get_close_matches(dotted, flat_keys(config), n=1, cutoff=0.5)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return KeyError(f"Unknown config key {dotted!r}.{hint}")


def set_by_path(config: ml_collections.ConfigDict, dotted: str, value_text: str) -> None:
    """Sets an existing key from its text form, keeping the key's type where there is one."""
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise _unknown_key(config, dotted)
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise _unknown_key(config, dotted)
    old = node[leaf]
    value = parse_literal(value_text)
    if isinstance(old, str) and not isinstance(value, str):
        value = value_text  # "--config.name=123" on a string key means the string "123"
    if isinstance(old, ml_collections.ConfigDict):
        raise ValueError(f"{dotted!r} is a section; set one of its keys: {flat_keys(old)}.")
    try:
        node[leaf] = value
    except TypeError as e:
        raise ValueError(f"Cannot set {dotted!r} to {value_text!r}: {e}") from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Iterable[str]
) -> ml_collections.ConfigDict:
    """Applies 'a.b=value' strings in order."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"Override {override!r} must look like key.path=value.")
        set_by_path(config, key.strip(), value.strip())
    return config
