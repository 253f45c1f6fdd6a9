"""Shared test set-up: 8 simulated CPU devices and small planted data sets."""

import os

# Must happen before jax is imported anywhere: sharding tests use 8 simulated CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from data_pipelines.prepare import imagetext  # noqa: E402
from tests.planted_packages import fake_render, plant_imagetext_tree  # noqa: E402


def slow_first(items: list) -> list:
    """items with the `slow`-marked ones first, each group in its collected order.

    Why: pytest-xdist's workers take tests from the front of their queues and steal from the
    back of each other's, so a long test collected late can leave one worker running it alone
    while the other has finished (run.py test; `--durations` in its output lists the slowest)."""
    return sorted(items, key=lambda item: item.get_closest_marker("slow") is None)


def pytest_collection_modifyitems(items):
    items[:] = slow_first(items)


@pytest.fixture(scope="session")
def imagetext_tree(tmp_path_factory):
    return plant_imagetext_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="session")
def prepared_imagetext(imagetext_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "imagetext"
    cache = tmp_path_factory.mktemp("cache")
    imagetext.prepare(
        out, cache=cache, tree=imagetext_tree, max_side=16, vocab_size=60, renderer=fake_render
    )
    return out
