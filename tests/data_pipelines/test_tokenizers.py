"""Tokenization inside tf.data equals the reference Python tokenizers; framing conventions."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import ops
from data_pipelines.tokenizers import (
    SP_EOS_ID,
    SP_PAD_ID,
    load_tokenizer,
    train_sentencepiece,
)
from hetclip.cli import main as cli_main

CORPUS = [
    "A european bear standing in the grass.",
    "An Indian blackbuck with long spiral horns.",
    "A US 25 cent piece called a quarter.",
    "A red fox, a blue car and a yellow submarine.",
    "Grinning face with big eyes",
    "cat face | pet | kitten",
    "Chemistry flask with a green liquid inside.",
    "Café crème brûlée, naïve résumé.",
] * 20
PROBES = [
    "a bear and a fox",
    "An unseen word: zyxxyqq!",
    "CAFÉ CRÈME",
    "",
    "  spaces   everywhere  ",
    "the quarter is a US coin " * 6,
]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_sentencepiece(CORPUS, tmp_path_factory.mktemp("sp") / "m", vocab_size=120)


def test_sentencepiece_in_tf_data_matches_python_sentencepiece(sp_model):
    import sentencepiece as spm

    reference = spm.SentencePieceProcessor(model_file=str(sp_model))
    tokenizer = load_tokenizer(f"sp:{sp_model}")
    ds = tf.data.Dataset.from_tensor_slices(PROBES).map(lambda s: tokenizer.ids(s[None])[0])
    for text, ids in zip(PROBES, ds.as_numpy_iterator(), strict=True):
        assert ids.tolist() == reference.encode(text), text
    assert (reference.pad_id(), reference.eos_id()) == (SP_PAD_ID, SP_EOS_ID)
    assert tokenizer.vocab_size == reference.get_piece_size()


def test_eos_conventions(sp_model):
    tokenizer = load_tokenizer(f"sp:{sp_model}")
    long_text = tf.constant(PROBES[-1])
    ids = tokenizer.ids(long_text[None])[0].numpy().tolist()
    assert len(ids) > 8
    sticky = tokenizer.frame(long_text, 8, eos="sticky").numpy().tolist()
    assert sticky == ids[:7] + [SP_EOS_ID]
    yes = tokenizer.frame(long_text, 8, eos="yes").numpy().tolist()
    assert yes == ids[:8]  # truncation cut the EOS off
    short = tokenizer.frame(tf.constant("a bear"), 8, eos="yes").numpy().tolist()
    n = len(tokenizer.ids(tf.constant(["a bear"]))[0])
    assert short[n] == SP_EOS_ID and short[n + 1 :] == [SP_PAD_ID] * (7 - n)
    none = tokenizer.frame(tf.constant("a bear"), 8, eos="none").numpy().tolist()
    assert SP_EOS_ID not in none
    padded_with_eos = tokenizer.frame(tf.constant("a bear"), 8, pad_value=SP_EOS_ID).numpy()
    assert padded_with_eos[-1] == SP_EOS_ID  # SigLIP style: the last position holds EOS
    with pytest.raises(ValueError, match="eos must be"):
        tokenizer.frame(long_text, 8, eos="always")


def test_tokenize_op_on_caption_lists(sp_model):
    pp = ops.build(
        "tokenize(max_len=6, key='texts', to='tokens')", {"tokenize": {"model": f"sp:{sp_model}"}}
    )
    out = pp({"texts": tf.constant(["a bear", "a fox", ""])})["tokens"].numpy()
    assert out.shape == (3, 6) and out.dtype == np.int32
    assert out[2].tolist() == [SP_EOS_ID] + [SP_PAD_ID] * 5
    with pytest.raises(ValueError, match="tokenize needs model"):
        ops.build("tokenize(max_len=4)")


@pytest.fixture(scope="module")
def wordpiece_vocab(tmp_path_factory):
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(CORPUS, vocab_size=200, min_frequency=1)
    folder = tmp_path_factory.mktemp("wp")
    trainer.save_model(str(folder))
    return folder / "vocab.txt"


def test_wordpiece_in_tf_data_matches_the_reference_bert_tokenizer(wordpiece_vocab):
    from tokenizers import BertWordPieceTokenizer

    reference = BertWordPieceTokenizer(str(wordpiece_vocab), lowercase=True)
    tokenizer = load_tokenizer(f"wordpiece:{wordpiece_vocab}")
    vocab = wordpiece_vocab.read_text().splitlines()
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (
        vocab.index("[CLS]"),
        vocab.index("[SEP]"),
        vocab.index("[PAD]"),
    )
    for text in PROBES:
        expected = reference.encode(text).ids  # [CLS] ... [SEP]
        framed = tokenizer.frame(tf.constant(text), 64, eos="yes").numpy().tolist()
        assert framed[: len(expected)] == expected, text
        assert framed[len(expected) :] == [tokenizer.pad_id] * (64 - len(expected))


def test_wordpiece_vocab_without_special_tokens_is_rejected(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"lacks the \[PAD\] token"):
        load_tokenizer(f"wordpiece:{vocab}")


def test_missing_tokenizer_file_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-tokenizer"):
        load_tokenizer(f"sp:{tmp_path}/nope.model")


def test_train_tokenizer_command_writes_a_usable_model(tmp_path, capsys):
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(CORPUS))
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,caption\nx.png,a hedgehog in the garden\n")
    code = cli_main(
        [
            "data",
            "train-tokenizer",
            "--input",
            str(corpus),
            str(manifest),
            "--out",
            str(tmp_path / "tok"),
            "--vocab-size",
            "100",
            "--lowercase",
        ]
    )
    assert code == 0
    assert f"sp:{tmp_path / 'tok.model'}" in capsys.readouterr().out
    tokenizer = load_tokenizer(f"sp:{tmp_path / 'tok.model'}")
    upper = tokenizer.ids(tf.constant(["A BEAR"])).numpy().tolist()
    lower = tokenizer.ids(tf.constant(["a bear"])).numpy().tolist()
    assert upper == lower  # --lowercase case-folds
