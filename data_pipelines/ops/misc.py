"""Ops on the example dict itself: keep, drop, copy, labels to one-hot."""

from __future__ import annotations

import tensorflow as tf

from data_pipelines.ops.registry import register


@register("keep")
def get_keep(*keys: str):
    """Keeps only `keys` (and the pipeline's internal '_' keys such as '_mask')."""

    def op(example):
        missing = [k for k in keys if k not in example]
        if missing:
            raise KeyError(f"keep{keys}: the example has no {missing}; it has {sorted(example)}.")
        return {k: v for k, v in example.items() if k in keys or k.startswith("_")}

    return op


@register("drop")
def get_drop(*keys: str):
    def op(example):
        return {k: v for k, v in example.items() if k not in keys}

    return op


@register("copy")
def get_copy(inkey: str, outkey: str):
    def op(example):
        example[outkey] = example[inkey]
        return example

    return op


@register("onehot")
def get_onehot(
    depth: int, key: str = "label", to: str = "labels", on: float = 1.0, off: float = 0.0
):
    """Integer label(s) -> [depth] float32; several labels ([N] int) give a multi-hot vector."""

    def op(example):
        labels = tf.cast(example[key], tf.int32)
        hot = tf.one_hot(labels, depth, on_value=on, off_value=off, dtype=tf.float32)
        example[to] = tf.reduce_max(hot, axis=0) if labels.shape.rank == 1 else hot
        return example

    return op
