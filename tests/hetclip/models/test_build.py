"""Model assembly from config sections: size overrides of the text tower and clear errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from hetclip.models import build_model


def _two_towers(text: dict) -> dict:
    return {
        "kind": "two_towers",
        "embed_dim": 16,
        "image": {"variant": "mu/8", "pool": "gap"},
        "text": {"variant": "mu", "vocab_size": 50, **text},
    }


def test_text_tower_sizes_can_be_set_one_by_one():
    model = build_model(_two_towers({"width": 24, "depth": 3, "mlp_dim": 40, "num_heads": 2}))
    batch = {"image": np.zeros((1, 16, 16, 3), np.float32), "text": np.zeros((1, 4), np.int32)}
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch))["params"]
    params = nn.meta.unbox(params)
    text = params["txt"]
    assert text["Embed_0"]["embedding"].shape == (50, 24)
    assert len([k for k in text["Encoder_0"] if k.startswith("encoderblock_")]) == 3
    assert text["Encoder_0"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"].shape == (24, 40)


def test_unknown_text_tower_option_is_named():
    with pytest.raises(ValueError, match="Unknown text tower option"):
        build_model(_two_towers({"widht": 24}))
