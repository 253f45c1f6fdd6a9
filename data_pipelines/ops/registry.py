"""The op registry and the parser of pp strings ('op(args)|op(args)|...').

Arguments are Python literals parsed with `ast` (never eval): `resize(64)`,
`value_range(-1, 1)`, `keep("image", "text")`, `tokenize(max_len=32, eos="sticky")`.
An op registered with `random=True` gets a per-example, per-op seed derived from the example's
`_rng` ([2] int64, set by the input pipeline from (seed, global position)), so augmentations are
deterministic given (seed, step) and independent across ops.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

Example = dict[str, Any]
OpFn = Callable[..., Example]


@dataclasses.dataclass(frozen=True)
class OpInfo:
    factory: Callable[..., OpFn]
    random: bool


OPS: dict[str, OpInfo] = {}


def register(name: str, *, random: bool = False) -> Callable[[Callable[..., OpFn]], Callable]:
    """Decorator: registers `factory(*args, **kwargs) -> op` under `name`.

    The op is `op(example) -> example`, or `op(example, rng) -> example` when `random`.
    """

    def decorator(factory: Callable[..., OpFn]) -> Callable[..., OpFn]:
        if name in OPS:
            raise ValueError(f"pp op {name!r} is registered twice.")
        OPS[name] = OpInfo(factory, random)
        return factory

    return decorator


def _split_top_level(spec: str) -> list[str]:
    """Splits on '|' outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(spec):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_spec(spec: str) -> list[tuple[str, tuple, dict[str, Any]]]:
    """'resize(64)|keep("image")' -> [("resize", (64,), {}), ("keep", ("image",), {})]."""
    calls = []
    for part in _split_top_level(spec):
        try:
            node = ast.parse(part if part.endswith(")") else part + "()", mode="eval").body
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                raise SyntaxError("expected name(args)")
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except (SyntaxError, ValueError) as e:
            raise ValueError(
                f"Cannot parse pp op {part!r} in {spec!r}: {e}. Ops look like "
                "name(literal args, key=literal), e.g. resize(64) or keep('image', 'text')."
            ) from None
        calls.append((node.func.id, args, kwargs))
    return calls


def image_part(spec: str) -> str:
    """The ops of `spec` that the image module registered, in order: the image preprocessing of
    a two-tower pp string, reused to classify images (e.g. zero-shot on another data set)."""
    parts = _split_top_level(spec)
    names = [name for name, _, _ in parse_spec(spec)]
    return "|".join(
        part
        for part, name in zip(parts, names, strict=True)
        if name in OPS and OPS[name].factory.__module__.endswith(".ops.image")
    )


def _make_op(name: str, args: tuple, kwargs: dict[str, Any]) -> OpInfo:
    if name not in OPS:
        near = difflib.get_close_matches(name, OPS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown pp op {name!r}.{hint} Registered ops: {sorted(OPS)}.")
    info = OPS[name]
    try:
        inspect.signature(info.factory).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(
            f"Bad arguments for pp op {name}{inspect.signature(info.factory)}: {e}."
        ) from None
    return info


def build(spec: str, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Callable:
    """Compiles a pp string into one function example -> example.

    `defaults` gives keyword defaults per op name, e.g. {"tokenize": {"model": "sp:/x.model"}};
    arguments written in the string win.
    """
    import tensorflow as tf

    defaults = defaults or {}
    ops: list[tuple[OpFn, bool]] = []
    for name, args, kwargs in parse_spec(spec):
        info = _make_op(name, args, kwargs)
        params = inspect.signature(info.factory).parameters
        merged = {k: v for k, v in defaults.get(name, {}).items() if k in params}
        merged.update(kwargs)
        ops.append((info.factory(*args, **merged), info.random))

    def apply(example: Example) -> Example:
        example = dict(example)
        base_rng = example.get("_rng")
        if base_rng is None:
            base_rng = tf.constant([0, 0], tf.int64)
        for position, (op, is_random) in enumerate(ops):
            if is_random:
                rng = tf.random.experimental.stateless_fold_in(base_rng, position)
                example = op(example, rng)
            else:
                example = op(example)
        return example

    return apply
