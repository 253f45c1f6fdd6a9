"""Pieces shared by the sources that read raw image files (folders, manifests, tar shards)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.images import DEFAULT_MAX_PIXELS, checked_image_bytes
from data_pipelines.records import SkipRecord

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
REASON_MISSING = "missing_file"
REASON_NO_CAPTION = "empty_caption"


def example_signature() -> dict[str, Any]:
    """tf.TensorSpec of the full example dict (records.EXAMPLE_KEYS)."""
    import tensorflow as tf

    return {
        "id": tf.TensorSpec([], tf.string),
        "image": tf.TensorSpec([], tf.string),
        "texts": tf.TensorSpec([None], tf.string),
        "label": tf.TensorSpec([], tf.int64),
        "source": tf.TensorSpec([], tf.string),
        "category": tf.TensorSpec([], tf.string),
    }


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise SkipRecord(REASON_MISSING, str(path)) from None


def clean_captions(texts: Iterable[str | None], *, required: bool) -> list[str]:
    """Strips captions and drops empty ones; with `required`, no caption left is a skip."""
    cleaned = [t.strip() for t in texts if t is not None and t.strip()]
    if required and not cleaned:
        raise SkipRecord(REASON_NO_CAPTION)
    return cleaned


class ImageChecks:
    """How raw images are checked before they enter tf.data (see data_pipelines.images)."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS, full_decode: bool = True):
        self.max_pixels = max_pixels
        self.full_decode = full_decode

    def __call__(self, data: bytes, where: str = "") -> bytes:
        try:
            return checked_image_bytes(
                data, max_pixels=self.max_pixels, full_decode=self.full_decode
            )
        except SkipRecord as e:
            raise SkipRecord(e.reason, f"{where}: {e.detail}" if where else e.detail) from None


def make_example(
    *,
    id: str,
    image: bytes,
    texts: list[str],
    label: int = -1,
    source: str = "",
    category: str = "",
) -> dict[str, Any]:
    return {
        "id": id,
        "image": image,
        "texts": np.asarray(texts if texts else [""], dtype=object),
        "label": np.int64(label),
        "source": source,
        "category": category,
    }
