"""Fashion-MNIST (Debian's dataset-fashion-mnist, MIT) as a labelled set of 10 classes.

Splits: `train` (55,000) and `validation` (5,000) carved from the original training set by a
hash of the example index, `test` = the original 10,000 test images. Images are 28x28 grayscale
PNGs; `decode` expands them to 3 channels.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipelines.prepare.debs import fetch_debs, unpack_deb
from data_pipelines.prepare.writing import split_by_hash, write_prepared
from data_pipelines.progress import Progress
from data_pipelines.records import SkipCounter

NAME = "fashion_mnist"
PACKAGE = "dataset-fashion-mnist"
FOLDER = "usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) into a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {body.size} values for shape {shape}.")
    return body.reshape(shape)


def _examples(images: np.ndarray, labels: np.ndarray, prefix: str, progress: Progress):
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        progress.update()
        yield {
            "id": f"{prefix}/{i:05d}",
            "image": out.getvalue(),
            "texts": [CLASS_NAMES[label]],
            "label": int(label),
            "source": NAME,
            "category": CLASS_NAMES[label],
        }


def prepare(out_dir: Path, *, cache: Path, tree: Path | None = None) -> Path:
    if tree is None:
        tree = cache / "tree"
        if not (tree / FOLDER / "t10k-labels-idx1-ubyte.gz").exists():
            unpack_deb(fetch_debs([PACKAGE], cache)[PACKAGE], tree, lambda n: n.startswith(FOLDER))
    folder = tree / FOLDER
    train_x = read_idx(folder / "train-images-idx3-ubyte.gz")
    train_y = read_idx(folder / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    is_val = np.array(
        [
            split_by_hash(f"fmnist/{i}", (("train", 11 / 12), ("validation", 1 / 12)))
            == "validation"
            for i in range(len(train_y))
        ]
    )
    progress = Progress("prepare fashion_mnist", total=len(train_y) + len(test_y))
    splits = {
        "train": _examples(train_x[~is_val], train_y[~is_val], "train", progress),
        "validation": _examples(train_x[is_val], train_y[is_val], "validation", progress),
        "test": _examples(test_x, test_y, "test", progress),
    }
    manifest = {
        "name": NAME,
        "description": "Fashion-MNIST, 28x28 grayscale, 10 classes.",
        "packages": {PACKAGE: "MIT"},
        "classes": list(CLASS_NAMES),
    }
    path = write_prepared(out_dir, splits, manifest, SkipCounter(), records_per_shard=10_000)
    progress.close()
    return path
