"""ViT and text transformer: big_vision names and sizes, pooling, scan / remat / bfloat16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from towers.checkpoints import flatten_shapes
from towers.text_transformer import TextTransformer
from towers.vit import ViT, parse_variant


def param_count(model, *inputs) -> int:
    shapes = jax.eval_shape(lambda *x: model.init(jax.random.PRNGKey(0), *x), *inputs)
    return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(nn.meta.unbox(shapes)))


IMAGES_224 = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


@pytest.mark.parametrize(
    "variant,published_millions",
    [
        ("Ti/16", 5.5),
        ("S/16", 21.7),
        ("B/16", 85.8),
        ("L/16", 303.3),
        ("B/32", 87.5),
    ],
)
def test_vit_parameter_counts_match_published_sizes(variant, published_millions):
    count = param_count(ViT(variant=variant, pool="tok"), IMAGES_224)
    assert abs(count / 1e6 - published_millions) < 0.2, count


def test_vit_uses_big_vision_parameter_names():
    shapes = jax.eval_shape(
        lambda x: ViT(variant="mu/8", pool="map", num_classes=7).init(jax.random.PRNGKey(0), x),
        jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32),
    )
    keys = set(flatten_shapes(shapes["params"]))
    for key in (
        "embedding/kernel",
        "pos_embedding",
        "head/kernel",
        "Transformer/encoderblock_0/LayerNorm_0/scale",
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/out/kernel",
        "Transformer/encoderblock_0/MlpBlock_0/Dense_1/bias",
        "Transformer/encoder_norm/scale",
        "MAPHead_0/probe",
    ):
        assert key in keys, key
    assert flatten_shapes(shapes["params"])["pos_embedding"] == (1, 4, 32)
    tok = jax.eval_shape(
        lambda x: ViT(variant="mu/8", pool="tok").init(jax.random.PRNGKey(0), x),
        jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32),
    )
    assert flatten_shapes(tok["params"])["cls"] == (1, 1, 32)


def test_parameters_carry_logical_axis_names():
    boxed = ViT(variant="mu/8").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    specs = nn.get_partition_spec(boxed)["params"]
    block = specs["Transformer"]["encoderblock_0"]
    assert tuple(block["MlpBlock_0"]["Dense_0"]["kernel"]) == ("embed", "mlp")
    assert tuple(block["MultiHeadDotProductAttention_0"]["query"]["kernel"]) == (
        "embed",
        "heads",
        "kv",
    )


def test_unknown_variant_and_pool_are_named():
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        parse_variant("Z/16")
    with pytest.raises(ValueError, match="pool must be one of"):
        ViT(variant="mu/8", pool="avg").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))


def _outputs_and_grads(model, params, x):
    def loss(p):
        return jnp.sum(model.apply(p, x) ** 2)

    return model.apply(params, x), jax.grad(loss)(params)


def _unrolled_to_scanned(params):
    from towers.checkpoints import flatten, match_layout, unflatten

    flat = flatten(params)
    return unflatten(match_layout(flat, {"params/Transformer/encoderblock/x"}))


def test_scan_and_remat_give_the_same_outputs_and_gradients():
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    plain = ViT(variant="Ti/8", pool="gap", num_classes=5, head_zero_init=False)
    params = nn.meta.unbox(plain.init(jax.random.PRNGKey(0), images))
    out, grads = _outputs_and_grads(plain, params, images)
    for variant in (dict(remat=True), dict(scan=True), dict(scan=True, remat=True)):
        model = plain.clone(**variant)
        these = _unrolled_to_scanned(params) if variant.get("scan") else params
        other_out, other_grads = _outputs_and_grads(model, these, images)
        np.testing.assert_allclose(other_out, out, rtol=1e-5, atol=1e-6)
        if variant.get("scan"):
            other_grads = jax.tree.map(np.asarray, other_grads)
            grads_cmp = _unrolled_to_scanned(jax.tree.map(np.asarray, grads))
        else:
            grads_cmp = grads
        for a, b in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads_cmp), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


BF16_TOLERANCE = 0.05  # relative L2 error of bfloat16 compute against float32


def test_bfloat16_compute_stays_close_to_float32():
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    model = ViT(variant="S/16", pool="gap")
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), images))
    full = model.apply(params, images)
    half = model.clone(dtype=jnp.bfloat16).apply(params, images)
    assert half.dtype == jnp.float32  # outputs are returned in float32
    error = np.linalg.norm(half - full) / np.linalg.norm(full)
    assert error < BF16_TOLERANCE, error
    assert jax.tree.leaves(params)[0].dtype == jnp.float32  # parameters stay float32


def test_text_transformer_pools_and_names():
    tokens = jnp.array([[5, 6, 7, 1, 1], [8, 1, 1, 1, 1]])
    model = TextTransformer(variant="mu", vocab_size=10, num_classes=6)
    boxed = model.init(jax.random.PRNGKey(0), tokens)
    keys = set(flatten_shapes(boxed["params"]))
    for key in (
        "Embed_0/embedding",
        "pos_embedding",
        "head/kernel",
        "Encoder_0/encoderblock_0/MlpBlock_0/Dense_0/kernel",
        "Encoder_0/encoder_norm/bias",
    ):
        assert key in keys, key
    params = nn.meta.unbox(boxed)
    out = model.apply(params, tokens)
    assert out.shape == (2, 6)
    # 'last' pooling reads only the last position: changing an earlier token changes the
    # output through attention (no mask), changing nothing leaves it identical.
    np.testing.assert_allclose(model.apply(params, tokens), out)
    assert not np.allclose(model.apply(params, tokens.at[0, 0].set(9)), out)
    mean = model.clone(pool="mean").apply(params, tokens)
    assert not np.allclose(mean, out)


def test_text_transformer_sizes_can_be_overridden():
    """open_clip's small text tower: width 256, 6 layers, MLP 1024, 4 heads, context 32."""
    model = TextTransformer(
        variant="Ti", vocab_size=32_000, width=256, depth=6, mlp_dim=1024, num_heads=4
    )
    shapes = flatten_shapes(
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 32), int))["params"]
    )
    assert shapes["Embed_0/embedding"] == (32_000, 256)
    assert shapes["Encoder_0/encoderblock_5/MlpBlock_0/Dense_0/kernel"] == (256, 1024)
    assert not any("encoderblock_6" in k for k in shapes)
    per_layer = 4 * (256 * 256 + 256) + 2 * 256 * 1024 + 1024 + 256 + 4 * 256
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total == 32_000 * 256 + 32 * 256 + 6 * per_layer + 2 * 256


def test_every_tower_parameter_has_logical_axis_names():
    from towers.bert import BertConfig, BertTower

    small_bert = BertTower(
        BertConfig(
            vocab_size=20,
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=16,
        )
    )
    towers_and_inputs = [
        (ViT(variant="mu/8", pool="map", num_classes=3), jnp.zeros((1, 16, 16, 3))),
        (ViT(variant="mu/8", pool="tok", scan=True), jnp.zeros((1, 16, 16, 3))),
        (TextTransformer(variant="mu", vocab_size=10, num_classes=4), jnp.zeros((1, 5), int)),
        (small_bert, jnp.ones((1, 5), int)),
    ]
    for model, inputs in towers_and_inputs:
        boxed = model.init(jax.random.PRNGKey(0), inputs)
        leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        unnamed = [x for x in leaves if not isinstance(x, nn.Partitioned)]
        assert not unnamed, f"{type(model).__name__}: {len(unnamed)} parameters without names"
        named = [x for x in leaves if isinstance(x, nn.Partitioned)]
        assert all(len(x.names) == x.value.ndim for x in named)
