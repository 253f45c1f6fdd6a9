"""`hetclip train` end to end at test size: every shipped config family runs a few steps,
in-training evals, resume from the last checkpoint, and errors that name the fix."""

import json

import jax
import numpy as np
import pytest

from hetclip.cli import main
from hetclip.config import load_config
from hetclip.models import build_model
from hetclip.train.loop import train
from hetclip.train.metrics import read_metrics
from tests.hetclip.train.conftest import contrastive_config, supervised_config


@pytest.fixture()
def data_dir(prepared_imagetext, monkeypatch):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))
    return prepared_imagetext.parent


def _assert_trained(workdir, steps):
    metrics = read_metrics(workdir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    assert all(np.isfinite(m["loss"]) and m["finite"] == 1 for m in metrics)
    assert (workdir / "checkpoints" / str(steps)).is_dir()
    assert list((workdir / "tensorboard").iterdir())
    return metrics


@pytest.mark.parametrize(
    "spec",
    ["default.py", "default.py:hetxl=False", "default.py:loss=siglip", "lit_minilm.py"],
)
def test_contrastive_config_families_train(spec, data_dir, tmp_path):
    config = contrastive_config(data_dir, spec)
    metrics = _assert_trained_run(config, tmp_path)
    if "hetxl=False" in spec or "lit" in spec:
        assert "img_noise_std" not in metrics[-1]
    else:
        assert metrics[-1]["img_noise_std"] > 0
    if "siglip" in spec:
        assert metrics[-1]["bias"] == pytest.approx(-10, abs=0.1)


def _assert_trained_run(config, workdir):
    train(config, workdir)
    return _assert_trained(workdir, int(config.total_steps))


def test_lit_keeps_the_pretrained_minilm_tower_locked(data_dir, tmp_path):
    from towers.bert import load_minilm

    config = contrastive_config(data_dir, "lit_minilm.py", "total_steps=2")
    train(config, tmp_path)
    from hetclip.train.checkpoint import read_checkpoint

    restored = read_checkpoint(tmp_path / "checkpoints")
    pretrained = load_minilm()[1]["params"]
    np.testing.assert_array_equal(
        restored["params"]["txt"]["word_embeddings"]["embedding"],
        pretrained["word_embeddings"]["embedding"],
    )


@pytest.mark.parametrize(
    "head,form", [("hetxl", "softmax"), ("det", "sigmoid"), ("het", "softmax")]
)
def test_supervised_config_family_trains(head, form, class_folders, tmp_path):
    metrics = _assert_trained_run(supervised_config(class_folders, head=head, form=form), tmp_path)
    if head == "hetxl":
        assert 0.05 <= metrics[-1]["temperature"] <= 5.0


def test_gpu_pod_configs_build_the_named_architectures():
    """The big shipped configs describe the models they say (abstract init: no memory used)."""
    expectations = {
        "clip_vit_b16.py": (140e6, 160e6),  # ViT-B/16 + 12-layer width-512 text tower
        "siglip_vit_b16.py": (140e6, 165e6),
        "i21k_hetxl_vit_l32.py": (320e6, 345e6),  # ViT-L/32 + 21,843-class HET-XL head
    }
    for spec, (low, high) in expectations.items():
        config = load_config(spec)
        model = build_model(config.model)
        batch = {"image": jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)}
        if config.model.kind == "two_towers":
            batch["text"] = jax.ShapeDtypeStruct((1, 64), np.int32)
        shapes = jax.eval_shape(lambda b, model=model: model.init(jax.random.PRNGKey(0), b), batch)
        count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
        assert low < count < high, (spec, count)
    i21k = load_config("i21k_hetxl_vit_l32.py")
    assert i21k.schedule.warmup_steps == 10_000 and i21k.schedule.init_value == 1e-5
    assert i21k.model.head.num_samples == 1000 and i21k.model.head.num_factors == 50


def test_clip_b16_config_trains_at_tiny_size_with_scan_remat_bf16_and_column_blocks(
    data_dir, tmp_path
):
    config = contrastive_config(data_dir, "clip_vit_b16.py")
    config.model.image.variant = "mu/8"
    config.model.text.variant = "mu"
    config.model.text.vocab_size = 100
    config.model.embed_dim = 16
    config.loss.column_block = 4
    config.input.pp = config.input.pp.replace("224", "16")
    config.schedule.warmup_steps = 1
    config.input.batch_size = 8
    config.total_steps = 3
    _assert_trained_run(config, tmp_path)


def test_in_training_evals_run_zero_shot_on_held_out_categories_and_retrieval(data_dir, tmp_path):
    config = load_config("default.py:size=mu,res=16,batch=8,steps=2")
    config.eval_every = 2
    from hetclip.train.evaluators import evaluator_from_config

    metrics = train(config, tmp_path, evaluate=evaluator_from_config(config, tmp_path))
    assert 0 <= metrics["zeroshot_heldout/acc1"] <= 1
    assert metrics["zeroshot_heldout/acc5"] >= metrics["zeroshot_heldout/acc1"]
    assert (
        metrics["retrieval_test/image_retrieval_recall@10"]
        >= (metrics["retrieval_test/image_retrieval_recall@1"])
    )
    saved = np.load(tmp_path / "evals" / "zeroshot_heldout.npz")
    assert saved["logits"].shape == (len(saved["labels"]), len(saved["class_names"]))


@pytest.mark.slow
def test_resuming_a_finished_part_continues_where_it_stopped(data_dir, tmp_path):
    full = contrastive_config(data_dir, "default.py", "total_steps=4", "checkpoint.every=2")
    train(full, tmp_path / "full")
    part = contrastive_config(data_dir, "default.py", "total_steps=4", "checkpoint.every=2")
    part.total_steps = 2
    train(part, tmp_path / "part")
    # Someone else's lines after the checkpoint (a killed run) are dropped on resume.
    with (tmp_path / "part" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    part.total_steps = 4
    train(part, tmp_path / "part")
    assert read_metrics(tmp_path / "part" / "metrics.jsonl") == [
        {**m, "examples_per_s": pytest.approx(m["examples_per_s"], rel=100)}
        for m in read_metrics(tmp_path / "full" / "metrics.jsonl")
    ]


def test_bad_configs_fail_with_errors_naming_the_fix(data_dir, tmp_path, capsys):
    base = [
        "train",
        "--config",
        "default.py:size=mu,res=16,batch=8,steps=2",
        "--workdir",
        str(tmp_path),
    ]
    assert main([*base, "--config.model.kind=towers"]) == 2
    assert "model.kind must be one of" in capsys.readouterr().err
    assert main([*base, "--config.loss.kind=hinge"]) == 2
    assert "loss.kind must be one of" in capsys.readouterr().err
    assert main([*base, "--config.train.on_nonfinite=ignore"]) == 2
    assert "on_nonfinite must be one of" in capsys.readouterr().err
    assert main([*base, "--config.input.batch_size=6", "--config.train.accum_steps=4"]) == 2
    assert "micro-batches" in capsys.readouterr().err


@pytest.mark.slow
def test_a_checkpoint_restores_onto_a_different_mesh(data_dir, tmp_path):
    straight = contrastive_config(data_dir, "default.py", "total_steps=4", "checkpoint.every=2")
    straight.optim.name = "sgd"  # see test_step: Adam amplifies round-off of zero gradients
    expected = train(straight, tmp_path / "straight")
    part = contrastive_config(data_dir, "default.py", "total_steps=2", "checkpoint.every=2")
    part.optim.name = "sgd"
    part.mesh.update(data=8, fsdp=1)  # written by a pure data-parallel mesh
    train(part, tmp_path / "moved")
    part.total_steps = 4
    part.mesh.update(data=2, fsdp=4)  # resumed with parameters sharded 4 ways
    resumed = train(part, tmp_path / "moved")
    assert resumed["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert read_metrics(tmp_path / "moved" / "metrics.jsonl")[-1]["step"] == 4
