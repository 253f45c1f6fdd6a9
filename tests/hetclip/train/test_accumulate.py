"""Gradient caching: micro-batched loss and gradients equal the full-batch ones, contrastive
(every negative of the global batch) and supervised, on one device and on 8."""

import jax
import numpy as np
import pytest

from hetclip.models import build_model
from hetclip.sharding import make_mesh
from hetclip.train.accumulate import loss_and_grads, merge_micro, split_micro
from hetclip.train.objectives import make_objective
from hetclip.train.step import init_params


def test_split_then_merge_is_the_identity_and_micro_batches_stay_on_their_shard():
    x = np.arange(16 * 2).reshape(16, 2)
    micro = split_micro(x, 2, 4)
    assert micro.shape == (2, 8, 2)
    # Shard s holds rows 4s..4s+3; micro 0 takes rows 4s, 4s+1 of each shard.
    np.testing.assert_array_equal(micro[0][:, 0] // 2, [0, 1, 4, 5, 8, 9, 12, 13])
    np.testing.assert_array_equal(merge_micro(micro, 4), x)
    with pytest.raises(ValueError, match="must divide into 3 micro-batches"):
        split_micro(x, 3, 4)


def _batch(rng, size=16):
    return {
        "image": rng.normal(size=(size, 16, 16, 3)).astype(np.float32),
        "text": rng.integers(1, 50, size=(size, 6)).astype(np.int32),
        "label": rng.integers(0, 5, size=(size,)).astype(np.int32),
    }


CONTRASTIVE = {
    "kind": "two_towers",
    "embed_dim": 16,
    "image": {"kind": "vit", "variant": "mu/8"},
    "text": {"kind": "text_transformer", "variant": "mu", "vocab_size": 50},
    "bias_init": -10.0,
    "image_noise": {"num_factors": 3, "init_std": 0.2},
}
SUPERVISED = {
    "kind": "classifier",
    "image": {"kind": "vit", "variant": "mu/8"},
    "head": {"kind": "hetxl", "num_classes": 5, "num_factors": 2, "num_samples": 8},
}


@pytest.mark.parametrize(
    "model_config,loss",
    [
        (CONTRASTIVE, {"kind": "clip", "num_samples": 4}),
        (CONTRASTIVE, {"kind": "siglip", "num_samples": 4}),
        (SUPERVISED, {}),
    ],
    ids=["hetxl-clip", "hetxl-siglip", "hetxl-head"],
)
@pytest.mark.parametrize("devices", [1, 8])
def test_accumulated_gradients_equal_the_full_batch(model_config, loss, devices):
    mesh = make_mesh({"data": devices}, jax.devices()[:devices])
    model = build_model(model_config)
    batch = _batch(np.random.default_rng(0))
    params, _ = init_params(model, batch, 0, mesh)
    objective = make_objective(model, {"model": model_config, "loss": loss}, mesh)
    keys = jax.random.split(jax.random.PRNGKey(1))
    run = jax.jit(
        lambda p, b, accum: loss_and_grads(
            objective, p, b, *keys, accum_steps=accum, num_shards=devices
        ),
        static_argnums=2,
    )
    (full, _), full_grads = run(params, batch, 1)
    (accumulated, _), accumulated_grads = run(params, batch, 4 if devices == 1 else 2)
    np.testing.assert_allclose(accumulated, full, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(accumulated_grads), jax.tree.leaves(full_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert max(float(abs(g).max()) for g in jax.tree.leaves(full_grads["img"])) > 0
