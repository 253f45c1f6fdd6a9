"""The jitted training step: 8 devices equal 1, frozen parameters stay bit-identical, a
non-finite step leaves the state untouched."""

import jax
import numpy as np
import pytest

from hetclip.models import build_model
from hetclip.sharding import make_mesh
from hetclip.train import optim
from hetclip.train.objectives import make_objective
from hetclip.train.step import init_params, init_state, make_train_step
from tests.hetclip.train.test_accumulate import CONTRASTIVE, _batch

LOSS = {"kind": "clip", "num_samples": 4}


ADAMW = {"weight_decay": 0.1, "grad_clip_norm": 1.0}


def _run(axes, batches, freeze=(), model_config=CONTRASTIVE, accum=1, optim_config=ADAMW):
    devices = int(np.prod(list(axes.values())))
    mesh = make_mesh(axes, jax.devices()[:devices])
    model = build_model(model_config)
    params, shardings = init_params(model, batches[0], 0, mesh)
    initial = jax.device_get(params)
    lr = optim.schedule({"peak": 1e-2, "warmup_steps": 1}, 10)
    tx = optim.optimizer(optim_config, lr, params, freeze)
    state, state_shardings = init_state(tx, params, shardings, mesh)
    step = make_train_step(
        make_objective(model, {"model": model_config, "loss": LOSS}, mesh),
        tx,
        lr,
        seed=3,
        mesh=mesh,
        shardings=state_shardings,
        freeze=freeze,
        accum_steps=accum,
    )
    history = []
    for batch in batches:
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    return initial, jax.device_get(state), history


def test_eight_devices_and_fsdp_equal_one_device():
    rng = np.random.default_rng(0)
    batches = [_batch(rng) for _ in range(2)]
    # SGD, not Adam: attention key biases have an exactly-zero true gradient, and Adam would
    # blow their float round-off (different on 8 devices) up to full-size updates.
    sgd = {"name": "sgd", "grad_clip_norm": 1.0}
    _, one, one_metrics = _run({"data": 1}, batches, optim_config=sgd)
    _, eight, eight_metrics = _run({"data": 4, "fsdp": 2}, batches, optim_config=sgd)
    assert int(eight["step"]) == 2
    for key in ("loss", "grad_norm", "logit_scale"):
        np.testing.assert_allclose(eight_metrics[-1][key], one_metrics[-1][key], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(eight["params"]), jax.tree.leaves(one["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    initial = _run({"data": 1}, batches[:1])[0]
    assert not np.allclose(one["params"]["img"]["head"]["kernel"], initial["img"]["head"]["kernel"])


def test_frozen_tower_stays_bit_identical_while_the_other_learns():
    rng = np.random.default_rng(1)
    initial, final, _ = _run({"data": 2}, [_batch(rng) for _ in range(2)], freeze=["txt/.*"])
    for a, b in zip(
        jax.tree.leaves(final["params"]["txt"]), jax.tree.leaves(initial["txt"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        final["params"]["img"]["head"]["kernel"], initial["img"]["head"]["kernel"]
    )


def test_a_non_finite_step_is_reported_and_not_applied():
    rng = np.random.default_rng(2)
    bad = _batch(rng)
    bad["image"][3] = np.nan
    initial, after_bad, history = _run({"data": 1}, [bad])
    assert history[0]["finite"] == 0 and not np.isfinite(history[0]["loss"])
    assert int(after_bad["step"]) == 1  # the step counter (and the data) still move on
    for a, b in zip(jax.tree.leaves(after_bad["params"]), jax.tree.leaves(initial), strict=True):
        np.testing.assert_array_equal(a, b)
    _, _, history = _run({"data": 1}, [bad, _batch(rng), _batch(rng)])
    assert [h["finite"] for h in history] == [0, 1, 1]
    assert np.isfinite(history[-1]["loss"])


@pytest.mark.parametrize("head", ["det", "het", "hetxl"])
def test_supervised_heads_train_on_a_mesh(head):
    config = {
        "kind": "classifier",
        "image": {"kind": "vit", "variant": "mu/8"},
        "head": {"kind": head, "num_classes": 5},
    }
    rng = np.random.default_rng(3)
    _, final, history = _run({"data": 2}, [_batch(rng) for _ in range(2)], model_config=config)
    assert all(h["finite"] == 1 for h in history)
    assert int(final["step"]) == 2
