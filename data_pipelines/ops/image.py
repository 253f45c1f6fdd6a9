"""Image ops. Images are [H, W, 3]; `decode` gives uint8, `value_range` float32."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from data_pipelines.ops.registry import register


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _resize(image: tf.Tensor, hw: tuple[int, int], method: str, antialias: bool) -> tf.Tensor:
    dtype = image.dtype
    out = tf.image.resize(image, hw, method=method, antialias=antialias)
    if dtype == tf.uint8:  # keep uint8 in, uint8 out so ops compose in any order
        out = tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
    return out


@register("decode")
def get_decode(channels: int = 3, key: str = "image"):
    """Encoded bytes (JPEG, PNG, GIF, BMP, WebP) -> [H, W, channels] uint8."""

    def op(example):
        image = tf.io.decode_image(example[key], channels=channels, expand_animations=False)
        image.set_shape([None, None, channels])
        example[key] = image
        return example

    return op


@register("resize")
def get_resize(size, method: str = "bilinear", antialias: bool = True, key: str = "image"):
    """Resizes to `size` (int: square, or (height, width)), ignoring the aspect ratio."""
    hw = _hw(size)

    def op(example):
        example[key] = _resize(example[key], hw, method, antialias)
        return example

    return op


@register("resize_small")
def get_resize_small(
    size: int, method: str = "bilinear", antialias: bool = True, key: str = "image"
):
    """Resizes so that the shorter side is `size`, keeping the aspect ratio."""

    def op(example):
        image = example[key]
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(shape)
        hw = tf.cast(tf.round(shape * scale), tf.int32)
        hw = tf.maximum(hw, size)
        dtype = image.dtype
        out = tf.image.resize(image, hw, method=method, antialias=antialias)
        example[key] = (
            tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8) if dtype == tf.uint8 else out
        )
        return example

    return op


@register("central_crop")
def get_central_crop(size, key: str = "image"):
    """Crops the central (height, width) window; the image must be at least that large."""
    height, width = _hw(size)

    def op(example):
        image = example[key]
        shape = tf.shape(image)
        top = (shape[0] - height) // 2
        left = (shape[1] - width) // 2
        example[key] = image[top : top + height, left : left + width]
        return example

    return op


@register("random_crop", random=True)
def get_random_crop(size, key: str = "image"):
    height, width = _hw(size)

    def op(example, rng):
        image = example[key]
        channels = image.shape[-1] or tf.shape(image)[-1]
        example[key] = tf.image.stateless_random_crop(image, [height, width, channels], seed=rng)
        return example

    return op


@register("inception_crop", random=True)
def get_inception_crop(
    size=None,
    area_min: float = 5,
    area_max: float = 100,
    method: str = "bilinear",
    key: str = "image",
):
    """Inception-style crop: a random box of `area_min`..`area_max` percent of the image and
    aspect ratio 3/4..4/3, then a resize to `size` (if given)."""

    def op(example, rng):
        image = example[key]
        begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.zeros([0, 0, 4], tf.float32),
            seed=rng,
            area_range=(area_min / 100, area_max / 100),
            min_object_covered=0,
            use_image_if_no_bounding_boxes=True,
        )
        crop = tf.slice(image, begin, box_size)
        crop.set_shape([None, None, image.shape[-1]])
        if size is not None:
            crop = _resize(crop, _hw(size), method, antialias=True)
        example[key] = crop
        return example

    return op


@register("flip_lr", random=True)
def get_flip_lr(key: str = "image"):
    """Mirrors the image left-right with probability 1/2."""

    def op(example, rng):
        example[key] = tf.image.stateless_random_flip_left_right(example[key], seed=rng)
        return example

    return op


@register("value_range")
def get_value_range(
    vmin: float = -1.0,
    vmax: float = 1.0,
    in_min: float = 0.0,
    in_max: float = 255.0,
    clip_values: bool = False,
    key: str = "image",
):
    """Maps [in_min, in_max] linearly onto [vmin, vmax] as float32."""

    def op(example):
        image = tf.cast(example[key], tf.float32)
        image = (image - in_min) / (in_max - in_min) * (vmax - vmin) + vmin
        if clip_values:
            image = tf.clip_by_value(image, vmin, vmax)
        example[key] = image
        return example

    return op
