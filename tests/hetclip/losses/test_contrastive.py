"""Contrastive losses: hand-computed cases, HET-XL forms against a materialising reference, and
the sharded local losses against the single-device ones on 8 simulated devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hetclip.heads import mc
from hetclip.losses import contrastive, sharded
from hetclip.losses import het_contrastive as hc
from hetclip.sharding import make_mesh

B, D, R = 16, 8, 3
KEYS = jax.random.split(jax.random.PRNGKey(0), 8)
IMAGE = contrastive.l2_normalize(jax.random.normal(KEYS[0], (B, D)))
TEXT = contrastive.l2_normalize(jax.random.normal(KEYS[1], (B, D)))
LOG_SCALE, BIAS = jnp.log(10.0), jnp.float32(-3.0)
NOISE_KEY = jax.random.PRNGKey(9)


def noise_params(seed: int, batch: int = B) -> hc.NoiseParams:
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return hc.NoiseParams(
        jax.random.normal(k[0], (R, D)) * 0.3,
        jax.random.normal(k[1], (batch, D)) * 0.3,
        jax.nn.softplus(jax.random.normal(k[2], (batch, D))) * 0.2,
    )


IMAGE_NOISE, TEXT_NOISE = noise_params(1), noise_params(2)


def test_clip_loss_on_a_hand_computed_case():
    image = text = jnp.eye(2)  # matching pairs orthogonal to the others
    loss = contrastive.clip_loss(image, text, jnp.log(3.0))  # logits 3 * I
    np.testing.assert_allclose(loss, -np.log(np.e**3 / (np.e**3 + 1)), rtol=1e-6)


def test_siglip_loss_on_a_hand_computed_case():
    image = text = jnp.eye(2)
    loss = contrastive.siglip_loss(image, text, jnp.log(3.0), jnp.float32(-1.0))
    # positives: logit 3 - 1 = 2 (two of them); negatives: logit -1 (two of them); / B = 2
    expected = -(2 * np.log(1 / (1 + np.exp(-2.0))) + 2 * np.log(1 / (1 + np.exp(-1.0)))) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_normalisation_follows_big_vision():
    x = jnp.array([[3.0, 4.0]])
    np.testing.assert_allclose(contrastive.l2_normalize(x), [[0.6, 0.8]], rtol=1e-6)


def _worlds(image_noise, text_noise, num_samples, chunk):
    """[S, B, B] logits of every world, materialised with the streaming code's keys."""
    ids = jnp.arange(B)
    worlds = []
    for key in mc.chunk_keys(NOISE_KEY, num_samples // chunk):
        rows = hc.noisy_embeddings(IMAGE, image_noise, ids, key, hc.IMAGE_SIDE, chunk)
        cols = hc.noisy_embeddings(TEXT, text_noise, ids, key, hc.TEXT_SIDE, chunk)
        worlds.append(jnp.exp(LOG_SCALE) * jnp.einsum("icd,jcd->cij", rows, cols))
    return jnp.concatenate(worlds)


@pytest.mark.parametrize("text_noise", [None, TEXT_NOISE], ids=["image-noise", "both-sides"])
def test_hetxl_clip_loss_equals_the_materialised_definition(text_noise):
    worlds = _worlds(IMAGE_NOISE, text_noise, 16, 8)
    diagonal = jnp.arange(B)
    by_row = jax.nn.softmax(worlds, -1)[:, diagonal, diagonal].mean(0)
    by_col = jax.nn.softmax(worlds, -2)[:, diagonal, diagonal].mean(0)
    expected = -(jnp.log(by_row).mean() + jnp.log(by_col).mean()) / 2
    loss = hc.hetxl_clip_loss(
        IMAGE,
        TEXT,
        LOG_SCALE,
        NOISE_KEY,
        image_noise=IMAGE_NOISE,
        text_noise=text_noise,
        num_samples=16,
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_hetxl_siglip_loss_equals_the_materialised_definition():
    worlds = _worlds(IMAGE_NOISE, None, 16, 8)
    probs = jax.nn.sigmoid(worlds + BIAS).mean(0)
    eye = jnp.eye(B)
    expected = -jnp.sum(eye * jnp.log(probs) + (1 - eye) * jnp.log1p(-probs)) / B
    loss = hc.hetxl_siglip_loss(
        IMAGE, TEXT, LOG_SCALE, BIAS, NOISE_KEY, image_noise=IMAGE_NOISE, num_samples=16
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_hetxl_losses_without_noise_reduce_to_clip_and_siglip():
    np.testing.assert_allclose(
        hc.hetxl_clip_loss(IMAGE, TEXT, LOG_SCALE, NOISE_KEY, image_noise=None, num_samples=4),
        contrastive.clip_loss(IMAGE, TEXT, LOG_SCALE),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        hc.hetxl_siglip_loss(
            IMAGE, TEXT, LOG_SCALE, BIAS, NOISE_KEY, image_noise=None, num_samples=4
        ),
        contrastive.siglip_loss(IMAGE, TEXT, LOG_SCALE, BIAS),
        rtol=1e-5,
    )


def test_hetxl_clip_gradient_reaches_embeddings_noise_and_scale():
    def loss(image, noise, log_scale):
        return hc.hetxl_clip_loss(
            image, TEXT, log_scale, NOISE_KEY, image_noise=noise, num_samples=16
        )

    grads = jax.grad(loss, argnums=(0, 1, 2))(IMAGE, IMAGE_NOISE, LOG_SCALE)
    for g in jax.tree.leaves(grads):
        assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0


MESH_SHAPES = [{"data": 8}, {"data": 4, "fsdp": 2}]


def _compare(single, split, args):
    argnums = tuple(range(len(args)))
    value, grads = jax.value_and_grad(single, argnums)(*args)
    split_value, split_grads = jax.jit(jax.value_and_grad(split, argnums))(*args)
    np.testing.assert_allclose(split_value, value, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(split_grads), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("axes", MESH_SHAPES, ids=["data8", "data4xfsdp2"])
def test_sharded_clip_and_siglip_equal_single_device(axes):
    mesh = make_mesh(axes)
    _compare(
        contrastive.clip_loss,
        lambda i, t, s: sharded.sharded_clip_loss(mesh, i, t, s),
        (IMAGE, TEXT, LOG_SCALE),
    )
    _compare(
        contrastive.siglip_loss,
        lambda i, t, s, b: sharded.sharded_siglip_loss(mesh, i, t, s, b),
        (IMAGE, TEXT, LOG_SCALE, BIAS),
    )


@pytest.mark.parametrize("axes", MESH_SHAPES, ids=["data8", "data4xfsdp2"])
def test_sharded_hetxl_losses_equal_single_device(axes):
    mesh = make_mesh(axes)
    options = dict(num_samples=16, max_chunk=8)
    _compare(
        lambda i, t, s, n, m: hc.hetxl_clip_loss(
            i, t, s, NOISE_KEY, image_noise=n, text_noise=m, **options
        ),
        lambda i, t, s, n, m: sharded.sharded_hetxl_clip_loss(
            mesh, i, t, s, NOISE_KEY, image_noise=n, text_noise=m, **options
        ),
        (IMAGE, TEXT, LOG_SCALE, IMAGE_NOISE, TEXT_NOISE),
    )
    _compare(
        lambda i, t, s, b, n: hc.hetxl_siglip_loss(i, t, s, b, NOISE_KEY, image_noise=n, **options),
        lambda i, t, s, b, n: sharded.sharded_hetxl_siglip_loss(
            mesh, i, t, s, b, NOISE_KEY, image_noise=n, **options
        ),
        (IMAGE, TEXT, LOG_SCALE, BIAS, IMAGE_NOISE),
    )


@pytest.mark.parametrize("axes", MESH_SHAPES, ids=["data8", "data4xfsdp2"])
def test_ring_exchanged_sigmoid_losses_equal_single_device(axes):
    mesh = make_mesh(axes)
    _compare(
        contrastive.siglip_loss,
        lambda i, t, s, b: sharded.sharded_siglip_loss(mesh, i, t, s, b, exchange="ring"),
        (IMAGE, TEXT, LOG_SCALE, BIAS),
    )
    _compare(
        lambda i, t, s, b, n, m: hc.hetxl_siglip_loss(
            i, t, s, b, NOISE_KEY, image_noise=n, text_noise=m, num_samples=16
        ),
        lambda i, t, s, b, n, m: sharded.sharded_hetxl_siglip_loss(
            mesh,
            i,
            t,
            s,
            b,
            NOISE_KEY,
            image_noise=n,
            text_noise=m,
            num_samples=16,
            exchange="ring",
        ),
        (IMAGE, TEXT, LOG_SCALE, BIAS, IMAGE_NOISE, TEXT_NOISE),
    )


def test_column_blocked_softmax_losses_equal_single_device():
    mesh = make_mesh({"data": 4, "fsdp": 2})
    _compare(
        contrastive.clip_loss,
        lambda i, t, s: sharded.sharded_clip_loss(mesh, i, t, s, column_block=4),
        (IMAGE, TEXT, LOG_SCALE),
    )
    _compare(
        lambda i, t, s, n: hc.hetxl_clip_loss(i, t, s, NOISE_KEY, image_noise=n, num_samples=16),
        lambda i, t, s, n: sharded.sharded_hetxl_clip_loss(
            mesh, i, t, s, NOISE_KEY, image_noise=n, num_samples=16, column_block=8
        ),
        (IMAGE, TEXT, LOG_SCALE, IMAGE_NOISE),
    )
    with pytest.raises(ValueError, match="does not divide"):
        sharded.sharded_clip_loss(mesh, IMAGE, TEXT, LOG_SCALE, column_block=5)


def test_sharded_loss_rejects_a_mesh_without_batch_axes():
    mesh = make_mesh({"model": 8})
    with pytest.raises(ValueError, match="None of the batch axes"):
        sharded.sharded_clip_loss(mesh, IMAGE, TEXT, LOG_SCALE)
    with pytest.raises(ValueError, match="exchange must be one of"):
        sharded.sharded_siglip_loss(
            make_mesh({"data": 8}), IMAGE, TEXT, LOG_SCALE, BIAS, exchange="broadcast"
        )
