"""Each registered pp op, the pp-string parser and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import ops
from data_pipelines.ops.registry import OPS, parse_spec
from tests.helpers import image_bytes, solid_image_bytes


def run(spec: str, example: dict, **defaults) -> dict:
    result = ops.build(spec, defaults or None)({k: tf.constant(v) for k, v in example.items()})
    return {k: v.numpy() for k, v in result.items()}


def gradient_image(height: int = 6, width: int = 8) -> np.ndarray:
    rows = np.arange(height)[:, None, None] * 10
    cols = np.arange(width)[None, :, None]
    return (rows + cols + np.zeros((1, 1, 3))).astype(np.uint8)


def test_parse_spec_reads_literals_and_bare_names():
    parsed = parse_spec("decode|resize((32, 48))|value_range(-1, 1)|keep('image', 'text')|choice")
    assert parsed == [
        ("decode", (), {}),
        ("resize", ((32, 48),), {}),
        ("value_range", (-1, 1), {}),
        ("keep", ("image", "text"), {}),
        ("choice", (), {}),
    ]
    assert parse_spec("tokenize(max_len=8, eos='a|b')") == [
        ("tokenize", (), {"max_len": 8, "eos": "a|b"})
    ]


def test_unknown_op_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Did you mean 'resize'"):
        ops.build("decode|resise(3)")
    with pytest.raises(ValueError, match="Bad arguments for pp op resize"):
        ops.build("resize(3, sizee=4)")
    with pytest.raises(ValueError, match="Cannot parse pp op"):
        ops.build("resize(os.system('x'))")


def test_decode_png_and_jpeg_to_uint8_rgb():
    png = run("decode", {"image": image_bytes(7, 9)})["image"]
    assert png.shape == (7, 9, 3) and png.dtype == np.uint8
    jpeg = run("decode", {"image": solid_image_bytes((200, 10, 10), fmt="JPEG")})["image"]
    assert abs(int(jpeg[8, 8, 0]) - 200) < 4 and jpeg[8, 8, 1] < 20


def test_resize_and_resize_small_and_central_crop():
    image = np.zeros((20, 40, 3), np.uint8)
    assert run("resize(8)", {"image": image})["image"].shape == (8, 8, 3)
    assert run("resize((6, 10))", {"image": image})["image"].shape == (6, 10, 3)
    small = run("resize_small(10)", {"image": image})["image"]
    assert small.shape == (10, 20, 3) and small.dtype == np.uint8
    crop = run("central_crop(4)", {"image": gradient_image()})["image"]
    assert crop.shape == (4, 4, 3)
    assert crop[0, 0, 0] == gradient_image()[1, 2, 0]


def test_value_range_maps_endpoints():
    image = np.array([[[0, 255, 51]]], np.uint8)
    out = run("value_range(-1, 1)", {"image": image})["image"]
    np.testing.assert_allclose(out, [[[-1.0, 1.0, -0.6]]], atol=1e-6)
    assert out.dtype == np.float32
    unit = run("value_range(0, 1)", {"image": image})["image"]
    np.testing.assert_allclose(unit, [[[0.0, 1.0, 0.2]]], atol=1e-6)


def test_flip_lr_is_identity_or_exact_mirror_and_seeded():
    image = gradient_image()
    outcomes = set()
    for seed in range(16):
        out = run("flip_lr", {"image": image, "_rng": np.array([seed, 0], np.int64)})["image"]
        if np.array_equal(out, image):
            outcomes.add("same")
        else:
            np.testing.assert_array_equal(out, image[:, ::-1])
            outcomes.add("flipped")
    assert outcomes == {"same", "flipped"}
    a = run("flip_lr", {"image": image, "_rng": np.array([3, 5], np.int64)})["image"]
    b = run("flip_lr", {"image": image, "_rng": np.array([3, 5], np.int64)})["image"]
    np.testing.assert_array_equal(a, b)


def test_random_and_inception_crops_are_deterministic_per_seed():
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    for spec, shape in (("random_crop(16)", (16, 16, 3)), ("inception_crop(12)", (12, 12, 3))):
        outs = [
            run(spec, {"image": image, "_rng": np.array([s, 1], np.int64)})["image"]
            for s in (1, 1, 2, 3)
        ]
        assert all(o.shape == shape for o in outs)
        np.testing.assert_array_equal(outs[0], outs[1])
        assert not all(np.array_equal(outs[0], o) for o in outs[2:])
    uncropped = run(
        "inception_crop(area_min=100, area_max=100)",
        {"image": image, "_rng": np.array([0, 0], np.int64)},
    )["image"]
    assert uncropped.shape == image.shape


def test_random_ops_in_one_chain_use_different_streams():
    # Two random ops in one chain must not reuse one seed (that would correlate them).
    image = gradient_image()
    spec = "flip_lr|copy('image', 'second')|flip_lr(key='second')"
    # 'second' is flipped twice (by both ops) and equals the original iff both ops agree.
    disagreements = 0
    for seed in range(24):
        out = run(spec, {"image": image, "_rng": np.array([seed, 9], np.int64)})
        disagreements += int(not np.array_equal(out["second"], image))
    assert 0 < disagreements < 24


def test_keep_drop_copy_and_onehot():
    example = {
        "image": np.zeros((2, 2, 3), np.uint8),
        "label": np.int64(2),
        "id": b"x",
        "_mask": True,
    }
    kept = run("keep('label')", example)
    assert set(kept) == {"label", "_mask"}  # pipeline-internal keys survive keep
    assert set(run("drop('id')", example)) == {"image", "label", "_mask"}
    assert run("copy('label', 'y')", example)["y"] == 2
    np.testing.assert_array_equal(run("onehot(4)", example)["labels"], [0, 0, 1, 0])
    multi = run("onehot(5)", {"label": np.array([0, 3], np.int64)})["labels"]
    np.testing.assert_array_equal(multi, [1, 0, 0, 1, 0])
    with pytest.raises(Exception, match="has no"):
        run("keep('nope')", example)


def test_choice_first_and_lower():
    texts = np.array([b"", b"A Cat", b"A Dog"], dtype=object)
    picked = {
        run("choice", {"texts": texts, "_rng": np.array([s, 0], np.int64)})["text"]
        for s in range(30)
    }
    assert picked == {b"A Cat", b"A Dog"}  # never the empty caption
    assert run("first", {"texts": texts[1:]})["text"] == b"A Cat"
    assert (
        run("first|lower", {"texts": np.array(["ÉCOLE Ä".encode()], dtype=object)})["text"].decode()
        == "école ä"
    )


def test_every_registered_op_is_exercised_here():
    exercised = {
        "decode",
        "resize",
        "resize_small",
        "central_crop",
        "random_crop",
        "inception_crop",
        "flip_lr",
        "value_range",
        "keep",
        "drop",
        "copy",
        "onehot",
        "choice",
        "first",
        "lower",
        "tokenize",
    }
    assert set(OPS) == exercised  # tokenize: tests/data_pipelines/test_tokenizers.py


def test_image_part_keeps_the_image_ops_in_order():
    from data_pipelines.ops import image_part

    spec = "decode|resize(64)|value_range(-1, 1)|first|tokenize(max_len=16)|keep('image', 'text')"
    assert image_part(spec) == "decode|resize(64)|value_range(-1, 1)"
    assert image_part("first|keep('text')") == ""
