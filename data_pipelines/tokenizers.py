"""Text tokenizers that run inside tf.data (tensorflow-text), and sentencepiece training.

A tokenizer is named by a spec string:
  "sp:/path/model.model"          sentencepiece model (any type), ids as the model defines them
  "wordpiece:/path/vocab.txt"     BERT WordPiece, lower-cased (uncased models such as MiniLM)
  "wordpiece_cased:/path/vocab.txt"
A bare path ending in .model or .txt picks sp / wordpiece by its extension.

End-of-sequence conventions (the `eos` argument of the `tokenize` op) differ between model
families and change evaluation numbers when wrong, so they are explicit:
  "sticky": truncate to max_len - 1 (minus 1 more for a BOS) then append EOS: EOS always present
            (big_vision/SigLIP style; pad with the EOS id there so the last position is EOS).
  "yes":    append EOS, then truncate: a long text loses its EOS.
  "none":   no EOS.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from pathlib import Path

# Ids of our trained sentencepiece models (T5's layout): pad 0, eos 1, unk 2, no bos.
SP_PAD_ID, SP_EOS_ID, SP_UNK_ID = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """A tf-text tokenizer plus the special ids needed to frame sequences."""

    spec: str
    vocab_size: int
    pad_id: int
    eos_id: int | None
    bos_id: int | None
    _impl: object = dataclasses.field(repr=False, compare=False)

    def ids(self, strings):
        """[M] tf.string -> tf.RaggedTensor [M, None] int32 of token ids, no special tokens."""
        import tensorflow as tf

        out = self._impl.tokenize(strings)
        if out.shape.rank == 3:  # WordPiece: [M, words, pieces]
            out = out.merge_dims(-2, -1)
        return tf.cast(out, tf.int32)

    def frame(self, strings, max_len: int, eos: str = "sticky", pad_value: int | None = None):
        """[...] tf.string -> [..., max_len] int32: ids framed with BOS/EOS, truncated, padded."""
        import tensorflow as tf

        if eos not in ("sticky", "yes", "none"):
            raise ValueError(f"eos must be 'sticky', 'yes' or 'none', not {eos!r}.")
        if eos != "none" and self.eos_id is None:
            raise ValueError(f"Tokenizer {self.spec} has no EOS id; use eos='none'.")
        shape = tf.shape(strings)
        ids = self.ids(tf.reshape(strings, [-1]))
        rows = ids.nrows()

        def column(value: int):
            return tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tf.constant(value, tf.int32)))

        reserved = int(self.bos_id is not None) + int(eos == "sticky")
        if eos == "sticky":
            ids = tf.concat([ids[:, : max_len - reserved], column(self.eos_id)], axis=1)
        elif eos == "yes":
            ids = tf.concat([ids, column(self.eos_id)], axis=1)
        if self.bos_id is not None:
            ids = tf.concat([column(self.bos_id), ids], axis=1)
        ids = ids[:, :max_len]
        pad = self.pad_id if pad_value is None else pad_value
        dense = ids.to_tensor(default_value=pad, shape=[None, max_len])
        return tf.reshape(dense, tf.concat([shape, [max_len]], 0))


def _sentencepiece(path: Path, spec: str) -> TextTokenizer:
    import sentencepiece as spm
    import tensorflow_text as tf_text

    model = path.read_bytes()
    processor = spm.SentencePieceProcessor(model_proto=model)

    def special(i: int) -> int | None:
        return i if i >= 0 else None

    pad = special(processor.pad_id())
    return TextTokenizer(
        spec=spec,
        vocab_size=processor.get_piece_size(),
        pad_id=pad if pad is not None else 0,
        eos_id=special(processor.eos_id()),
        bos_id=None,  # sentencepiece models used for contrastive text towers add no BOS
        _impl=tf_text.SentencepieceTokenizer(model=model, out_type="int32"),
    )


def _wordpiece(path: Path, spec: str, lower_case: bool) -> TextTokenizer:
    import tensorflow as tf
    import tensorflow_text as tf_text

    vocab = path.read_text(encoding="utf-8").splitlines()
    ids = {token: i for i, token in enumerate(vocab)}
    for token in ("[PAD]", "[CLS]", "[SEP]", "[UNK]"):
        if token not in ids:
            raise ValueError(f"WordPiece vocabulary {path} lacks the {token} token.")
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)
        ),
        num_oov_buckets=1,
    )
    return TextTokenizer(
        spec=spec,
        vocab_size=len(vocab),
        pad_id=ids["[PAD]"],
        eos_id=ids["[SEP]"],
        bos_id=ids["[CLS]"],
        _impl=tf_text.BertTokenizer(
            table, lower_case=lower_case, token_out_type=tf.int64, unknown_token="[UNK]"
        ),
    )


@functools.lru_cache(maxsize=16)
def load_tokenizer(spec: str) -> TextTokenizer:
    """Builds (once per spec) the tokenizer named by `spec`; see the module docstring."""
    kind, _, location = spec.partition(":")
    if not location:
        kind, location = ("sp" if spec.endswith(".model") else "wordpiece"), spec
    path = Path(location).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Tokenizer file {path} (from {spec!r}) does not exist. Train a sentencepiece model "
            "with `hetclip data train-tokenizer`, or prepare the default data set, which ships one."
        )
    if kind == "sp":
        return _sentencepiece(path, spec)
    if kind in ("wordpiece", "wordpiece_cased"):
        return _wordpiece(path, spec, lower_case=kind == "wordpiece")
    raise ValueError(f"Unknown tokenizer kind {kind!r} in {spec!r}: use sp: or wordpiece:.")


def train_sentencepiece(
    sentences: Iterable[str],
    model_prefix: str | Path,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    lowercase: bool = False,
    character_coverage: float = 0.9995,
) -> Path:
    """Trains a sentencepiece model (pad 0, eos 1, unk 2, no bos) and returns the .model path.

    The vocabulary is a soft limit: a small corpus gets as many pieces as it supports.
    """
    import sentencepiece as spm

    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    sentences = [s.strip() for s in sentences if s and s.strip()]
    if not sentences:
        raise ValueError("No non-empty sentences to train a tokenizer on.")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=SP_PAD_ID,
        eos_id=SP_EOS_ID,
        unk_id=SP_UNK_ID,
        bos_id=-1,
        hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        num_threads=1,  # deterministic output for the same corpus
        minloglevel=2,
    )
    return model_prefix.with_suffix(".model")
