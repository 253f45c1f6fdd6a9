"""big_vision-layout .npz checkpoints: round trip, sub-trees, layouts and named errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from towers.checkpoints import flatten, load_params, read_npz, save_npz
from towers.text_transformer import TextTransformer
from towers.vit import ViT

IMAGES = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
TOKENS = jnp.array([[3, 4, 5, 1], [6, 1, 1, 1]])


@pytest.fixture(scope="module")
def two_tower(tmp_path_factory):
    image_model = ViT(variant="mu/8", pool="map", num_classes=4, head_zero_init=False)
    text_model = TextTransformer(variant="mu", vocab_size=8, num_classes=4)
    params = {
        "img": nn.meta.unbox(image_model.init(jax.random.PRNGKey(0), IMAGES))["params"],
        "txt": nn.meta.unbox(text_model.init(jax.random.PRNGKey(1), TOKENS))["params"],
        "t": jnp.float32(2.3),
    }
    path = save_npz(tmp_path_factory.mktemp("ckpt") / "two_tower.npz", params)
    return image_model, text_model, params, path


def test_file_has_big_vision_keys_under_params(two_tower):
    _, _, _, path = two_tower
    with np.load(path, allow_pickle=False) as data:
        keys = data.files
    assert "params/img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" in keys
    assert "params/txt/Embed_0/embedding" in keys and "params/t" in keys
    assert keys == sorted(keys)


def test_round_trip_gives_identical_outputs(two_tower):
    image_model, text_model, params, path = two_tower
    image_params = load_params(f"{path}:img", {"params": params["img"]})
    text_params = load_params(f"{path}:txt", {"params": params["txt"]})
    np.testing.assert_array_equal(
        image_model.apply(image_params, IMAGES),
        image_model.apply({"params": params["img"]}, IMAGES),
    )
    np.testing.assert_array_equal(
        text_model.apply(text_params, TOKENS), text_model.apply({"params": params["txt"]}, TOKENS)
    )


def test_scanned_model_loads_an_unrolled_checkpoint_and_back(two_tower, tmp_path):
    image_model, _, params, path = two_tower
    scanned = image_model.clone(scan=True)
    reference = jax.eval_shape(lambda x: scanned.init(jax.random.PRNGKey(0), x), IMAGES)
    loaded = load_params(f"{path}:img", nn.meta.unbox(reference))
    assert "encoderblock" in loaded["params"]["Transformer"]
    np.testing.assert_allclose(
        scanned.apply(loaded, IMAGES),
        image_model.apply({"params": params["img"]}, IMAGES),
        rtol=1e-5,
        atol=1e-6,
    )
    scan_file = save_npz(tmp_path / "scan.npz", loaded["params"])  # stacked layout on disk
    unrolled = load_params(scan_file, {"params": params["img"]})
    np.testing.assert_array_equal(
        image_model.apply(unrolled, IMAGES), image_model.apply({"params": params["img"]}, IMAGES)
    )


def _write(path, flat):
    np.savez(path, **flat)
    return path


def test_missing_extra_and_mis_shaped_keys_are_named(two_tower, tmp_path):
    _, _, params, path = two_tower
    flat = read_npz(f"{path}:img")
    reference = {"params": params["img"]}

    def variant(name, change):
        changed = dict(flat)
        change(changed)
        return _write(tmp_path / name, {f"params/{k}": v for k, v in changed.items()})

    with pytest.raises(ValueError, match=r"missing keys \['head/bias'\]"):
        load_params(variant("m.npz", lambda f: f.pop("head/bias")), reference)
    with pytest.raises(ValueError, match=r"unexpected keys \['head/extra'\]"):
        load_params(variant("u.npz", lambda f: f.update({"head/extra": np.zeros(2)})), reference)
    with pytest.raises(ValueError, match=r"head/kernel: checkpoint \(3, 4\) vs model \(32, 4\)"):
        load_params(
            variant("s.npz", lambda f: f.update({"head/kernel": np.zeros((3, 4))})), reference
        )


def test_sub_tree_and_file_errors(two_tower, tmp_path):
    _, _, _, path = two_tower
    assert set(read_npz(f"{path}:txt")) >= {"Embed_0/embedding", "head/kernel"}
    assert float(read_npz(path)["t"]) == pytest.approx(2.3)
    with pytest.raises(KeyError, match="no sub-tree 'image'.*'img', 't', 'txt'"):
        read_npz(f"{path}:image")
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "absent.npz")
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_npz(tmp_path / "pickled.npz")  # never unpickled


def test_old_trainer_layout_is_accepted(tmp_path):
    path = _write(
        tmp_path / "old.npz",
        {"opt/target/head/kernel": np.ones((2, 2)), "opt/state/mu": np.zeros(1)},
    )
    assert set(read_npz(path)) == {"head/kernel"}
    assert set(flatten({"a": {"b": np.ones(1)}})) == {"a/b"}
