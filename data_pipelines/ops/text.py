"""Text ops: choose a caption, lower-case, tokenize (inside tf.data)."""

from __future__ import annotations

import tensorflow as tf

from data_pipelines.ops.registry import register
from data_pipelines.tokenizers import load_tokenizer


@register("choice", random=True)
def get_choice(inkey: str = "texts", outkey: str = "text"):
    """Picks one of the [N] captions uniformly (never an empty one when others exist)."""

    def op(example, rng):
        texts = example[inkey]
        nonempty = tf.boolean_mask(texts, tf.strings.length(texts) > 0)
        pool = tf.cond(tf.size(nonempty) > 0, lambda: nonempty, lambda: texts)
        index = tf.random.stateless_uniform([], rng, 0, tf.size(pool), dtype=tf.int32)
        example[outkey] = pool[index]
        return example

    return op


@register("first")
def get_first(inkey: str = "texts", outkey: str = "text"):
    """Takes the first caption (deterministic, for evaluation)."""

    def op(example):
        example[outkey] = example[inkey][0]
        return example

    return op


@register("lower")
def get_lower(key: str = "text"):
    def op(example):
        example[key] = tf.strings.lower(example[key], encoding="utf-8")
        return example

    return op


@register("tokenize")
def get_tokenize(
    max_len: int,
    model: str | None = None,
    key: str = "text",
    to: str | None = None,
    eos: str = "sticky",
    pad_value: int | None = None,
):
    """Strings ([] or [N]) -> int32 ids ([max_len] or [N, max_len]); see data_pipelines.tokenizers
    for the `model` specs and the `eos` conventions."""
    if model is None:
        raise ValueError(
            "tokenize needs model='sp:/path/x.model' or 'wordpiece:/path/vocab.txt' (configs set "
            "it through the pipeline's pp defaults)."
        )
    tokenizer = load_tokenizer(model)

    def op(example):
        example[to or key] = tokenizer.frame(example[key], max_len, eos=eos, pad_value=pad_value)
        return example

    return op
