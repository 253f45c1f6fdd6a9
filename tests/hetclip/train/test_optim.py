"""Schedules, parameter groups (freezing, weight-decay exemptions) and their errors."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hetclip.train import optim

PARAMS = {
    "img": {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}},
    "txt": {"Embed_0": {"embedding": jnp.ones((5, 2))}},
    "t": jnp.ones(1),
}


def test_warmup_then_cosine_follows_the_seed_recipe():
    lr = optim.schedule(
        {"peak": 6e-4, "init_value": 1e-5, "warmup_steps": 10, "decay": "cosine"}, 110
    )
    assert float(lr(0)) == pytest.approx(1e-5, rel=1e-4)  # float32 schedule
    assert float(lr(5)) == pytest.approx(1e-5 + 0.5 * (6e-4 - 1e-5), rel=1e-5)
    assert float(lr(10)) == pytest.approx(6e-4, rel=1e-5)
    assert float(lr(60)) == pytest.approx(3e-4, rel=1e-3)  # half-way down the cosine
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-9)
    linear = optim.schedule({"peak": 1.0, "warmup_steps": 0, "decay": "linear"}, 10)
    assert float(linear(5)) == pytest.approx(0.5)


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match="decay must be one of"):
        optim.schedule({"decay": "exp"}, 10)
    with pytest.raises(ValueError, match="exceeds total_steps"):
        optim.schedule({"warmup_steps": 20}, 10)


def test_decay_applies_to_matrices_only_and_not_to_no_decay_paths():
    mask = optim.decay_mask(PARAMS, [r"txt/.*"])
    assert mask["img"]["Dense_0"]["kernel"] is True
    assert mask["img"]["Dense_0"]["bias"] is False
    assert mask["t"] is False
    assert mask["txt"]["Embed_0"]["embedding"] is False


def test_frozen_parameters_get_exactly_zero_updates():
    lr = optax.constant_schedule(0.1)
    tx = optim.optimizer(
        {"name": "adamw", "weight_decay": 0.1, "grad_clip_norm": 1.0}, lr, PARAMS, freeze=["txt/.*"]
    )
    grads = {
        "img": {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}},
        "txt": {"Embed_0": {"embedding": jnp.ones((5, 2))}},
        "t": jnp.ones(1),
    }
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert not np.any(np.asarray(updates["txt"]["Embed_0"]["embedding"]))
    assert np.all(np.asarray(updates["img"]["Dense_0"]["kernel"]) < 0)


def test_freeze_patterns_that_match_nothing_or_do_not_compile_are_errors():
    lr = optax.constant_schedule(0.1)
    with pytest.raises(ValueError, match="match no parameter; paths look like"):
        optim.optimizer({}, lr, PARAMS, freeze=["text/.*"])
    with pytest.raises(ValueError, match="not a valid regex"):
        optim.optimizer({}, lr, PARAMS, freeze=["txt/("])
    with pytest.raises(ValueError, match="optim.name must be one of"):
        optim.optimizer({"name": "lamb"}, lr, PARAMS)
