"""TensorFlow Datasets builders (imagenet2012, imagenet_v2, cifar..., or your own builder).

TFDS streams records in order, so this is a StreamingSource: each process reads its own
`tfds.even_splits` share, file order and shuffling are seeded, and images stay encoded until
the pipeline's `decode` op (SkipDecoding), so skipping ahead on resume reads but never decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data_pipelines.sources.base import StreamingSource


class TfdsSource(StreamingSource):
    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | None = None,
        image_key: str = "image",
        label_key: str | None = "label",
        text_keys: Sequence[str] = (),
        id_key: str | None = None,
    ):
        super().__init__()
        import tensorflow_datasets as tfds

        self.name, self.split = name, split
        self.image_key, self.label_key = image_key, label_key
        self.text_keys, self.id_key = tuple(text_keys), id_key
        self.data_dir = data_dir
        self.builder = tfds.builder(name, data_dir=data_dir)
        try:
            self.num_examples: int | None = self.builder.info.splits[split].num_examples
        except (KeyError, ValueError):
            self.num_examples = None  # known once read (mock data sets carry no split sizes)

    def _missing(self, error: Exception) -> FileNotFoundError:
        return FileNotFoundError(
            f"TFDS data set {self.name!r} (split {self.split!r}) is not available in "
            f"{self.data_dir or '~/tensorflow_datasets'}: {error}. Prepare it with `tfds build "
            f"{self.name} --data_dir DIR` (sets such as imagenet2012 need their archives placed "
            "in DIR/downloads/manual first) and pass data_dir=DIR."
        )

    def process_split(self, process_index: int, process_count: int):
        """This process's equal share of the split (a TFDS split object for as_dataset)."""
        import tensorflow_datasets as tfds

        shares = tfds.even_splits(self.split, n=process_count, drop_remainder=True)
        return shares[process_index]

    def dataset(self, *, process_index: int, process_count: int, seed: int, shuffle: bool):
        import tensorflow as tf
        import tensorflow_datasets as tfds

        split = self.process_split(process_index, process_count)
        try:
            ds = self.builder.as_dataset(
                split=split,
                shuffle_files=shuffle,
                decoders={self.image_key: tfds.decode.SkipDecoding()},
                read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
            )
        except (AssertionError, FileNotFoundError, ValueError) as e:
            raise self._missing(e) from None
        source_name = self.name

        def to_example(features: dict[str, Any]) -> dict[str, Any]:
            texts = [tf.reshape(features[k], [-1]) for k in self.text_keys]
            label = features[self.label_key] if self.label_key else tf.constant(-1)
            example_id = (
                tf.strings.as_string(features[self.id_key])
                if self.id_key and features[self.id_key].dtype != tf.string
                else features[self.id_key]
                if self.id_key
                else tf.constant("")
            )
            return {
                "id": example_id,
                "image": features[self.image_key],
                "texts": tf.concat(texts, 0) if texts else tf.constant([""]),
                "label": tf.cast(label, tf.int64),
                "source": tf.constant(source_name),
                "category": tf.constant(""),
            }

        return ds.map(to_example)

    def describe(self) -> str:
        return f"TfdsSource({self.name}[{self.split}]: {self.num_examples} examples)"
