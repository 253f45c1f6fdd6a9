"""Input batches land on an 8-device mesh split over the batch axes."""

import jax
import numpy as np
import pytest

from hetclip.sharding import batch_sharding, global_batch, make_mesh


def test_mesh_fills_the_free_axis_and_rejects_bad_shapes():
    assert jax.device_count() == 8  # tests/conftest.py simulates 8 CPU devices
    mesh = make_mesh({"data": -1, "fsdp": 2, "model": 1})
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "model": 1}
    with pytest.raises(ValueError, match="need 6 devices"):
        make_mesh({"data": 3, "model": 2})
    with pytest.raises(ValueError, match="At most one"):
        make_mesh({"data": -1, "model": -1})


def test_local_batches_become_global_arrays_sharded_over_data_and_fsdp():
    mesh = make_mesh({"data": 2, "fsdp": 2, "model": 2})
    local = {
        "image": np.arange(8 * 3, dtype=np.float32).reshape(8, 3),
        "label": np.arange(8),
        "id": np.array([b"x"] * 8, dtype=object),
    }
    batch = global_batch(local, mesh)
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 3)
    assert batch["image"].sharding == batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(batch["image"]), local["image"])
    shard_rows = {tuple(np.asarray(s.data)[:, 0]) for s in batch["image"].addressable_shards}
    assert len(shard_rows) == 4  # 4 batch shards, each replicated over the 2 model devices
