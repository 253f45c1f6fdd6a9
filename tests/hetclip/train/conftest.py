"""Tiny data and configs for trainer tests."""

import ml_collections
import numpy as np
import pytest
from PIL import Image

from hetclip.config import apply_overrides, load_config


@pytest.fixture(scope="session")
def class_folders(tmp_path_factory):
    """4 classes x 8 images of 8x8 pixels, each class its own colour (learnable in a few steps)."""
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    for label in range(4):
        folder = root / f"class_{label}"
        folder.mkdir()
        for i in range(8):
            pixels = np.full((8, 8, 3), 60 * label, np.uint8) + rng.integers(
                0, 20, (8, 8, 3), np.uint8
            )
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_config(spec: str, *overrides: str):
    """A shipped config at test size: log every step, no evals unless asked."""
    config = load_config(spec)
    return apply_overrides(
        config, ["log_every=1", "eval_every=0", "checkpoint.every=100", *overrides]
    )


def supervised_config(folders, *overrides: str, head: str = "hetxl", form: str = "softmax"):
    """fashion_mnist.py at test size, reading the class folders instead."""
    config = tiny_config(
        f"fashion_mnist.py:size=mu,batch=8,steps=3,head={head},form={form},samples=4",
        "input.pp=decode|resize(8)|value_range(-1, 1)|keep('image', 'label')",
        *overrides,
    )
    config.input.data = ml_collections.ConfigDict({"kind": "folder", "root": str(folders)})
    config.model.head.num_classes = 4
    return config


def contrastive_config(data_root, spec: str = "default.py", *overrides: str):
    """A two-tower config at test size on the planted imagetext set under `data_root`."""
    arg = "size=mu,res=16,batch=8,steps=3"
    spec = f"{spec}:{arg}" if ":" not in spec else f"{spec},{arg}"
    return tiny_config(spec, *overrides)
