"""TensorFlow Datasets builders (imagenet2012, imagenet_v2, cifar..., or your own builder).

`multilabel_key` names a Sequence(ClassLabel) feature (e.g. imagenet2012_real's "real_label");
it becomes "labels", a [K] bool multi-hot, for "any correct" scoring.
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
        multilabel_key: str | None = None,
    ):
        super().__init__()
        import tensorflow_datasets as tfds

        self.name, self.split = name, split
        self.image_key, self.label_key = image_key, label_key
        self.text_keys, self.id_key = tuple(text_keys), id_key
        self.multilabel_key = multilabel_key
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

    def process_split(self, process_index: int, process_count: int, drop_remainder: bool = True):
        """This process's share of the split (a TFDS split object for as_dataset); equal shares
        unless `drop_remainder` is False (then they differ by at most one example)."""
        import tensorflow_datasets as tfds

        shares = tfds.even_splits(self.split, n=process_count, drop_remainder=drop_remainder)
        return shares[process_index]

    def dataset(
        self,
        *,
        process_index: int,
        process_count: int,
        seed: int,
        shuffle: bool,
        drop_remainder: bool = True,
    ):
        import tensorflow as tf
        import tensorflow_datasets as tfds

        split = self.process_split(process_index, process_count, drop_remainder)
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
        num_labels = self.num_multilabel_classes() if self.multilabel_key else 0

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
            example = {
                "id": example_id,
                "image": features[self.image_key],
                "texts": tf.concat(texts, 0) if texts else tf.constant([""]),
                "label": tf.cast(label, tf.int64),
                "source": tf.constant(source_name),
                "category": tf.constant(""),
            }
            if self.multilabel_key:
                # [K] multi-hot of the image's label set (ImageNet-ReaL: 0 to several labels).
                ids = tf.reshape(tf.cast(features[self.multilabel_key], tf.int32), [-1])
                example["labels"] = tf.reduce_any(
                    tf.one_hot(ids, num_labels, on_value=True, off_value=False, dtype=tf.bool)
                    | tf.zeros([1, num_labels], tf.bool),
                    axis=0,
                )
            return example

        return ds.map(to_example)

    def class_names(self) -> list[str]:
        """The names of the label feature's classes (TFDS ClassLabel names)."""
        feature = self.builder.info.features[self.label_key or self.multilabel_key]
        feature = getattr(feature, "feature", feature)  # a Sequence of ClassLabel
        if not getattr(feature, "names", None):
            raise ValueError(f"{self.name}'s {self.label_key!r} feature has no class names.")
        return list(feature.names)

    def num_multilabel_classes(self) -> int:
        feature = self.builder.info.features[self.multilabel_key]
        return int(getattr(feature, "feature", feature).num_classes)

    def describe(self) -> str:
        return f"TfdsSource({self.name}[{self.split}]: {self.num_examples} examples)"
