"""Distillation runs end to end at test size: teachers trained, then a Dirichlet student."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from hetclip.config import load_config
from hetclip.losses import dirichlet, ensemble_targets
from hetclip.models import build_model
from hetclip.train import distill
from hetclip.train.checkpoint import read_checkpoint
from hetclip.train.evaluators import evaluator_from_config
from hetclip.train.loop import train
from hetclip.train.metrics import read_metrics
from tests.hetclip.train.conftest import supervised_config, tiny_config


@pytest.fixture(scope="module")
def teachers(class_folders, tmp_path_factory):
    """Two DET teachers (seeds 0, 1) and one HET-XL teacher, 3 steps each."""
    root = tmp_path_factory.mktemp("teachers")
    dirs = {}
    for name, head, seed in (("det0", "det", 0), ("det1", "det", 1), ("hetxl", "hetxl", 0)):
        config = supervised_config(class_folders, f"seed={seed}", head=head)
        train(config, root / name)
        dirs[name] = str(root / name)
    return dirs


def _student(folders, teacher_dirs, *overrides, **args):
    arg = ",".join(f"{k}={v}" for k, v in args.items())
    config = tiny_config(
        f"fashion_mnist_distill.py:teachers={list(teacher_dirs)},size=mu,batch=8,steps=3"
        + (f",{arg}" if arg else ""),
        "input.pp=decode|resize(8)|value_range(-1, 1)|keep('image', 'label')",
        *overrides,
    )
    config.input.data = {"kind": "folder", "root": str(folders)}
    config.model.head.num_classes = 4
    return config


@pytest.mark.parametrize("loss", distill.LOSSES)
def test_student_trains_and_teachers_stay_frozen(loss, teachers, class_folders, tmp_path):
    config = _student(
        class_folders, [teachers["det0"], teachers["det1"]], "eval_every=3", loss=f"'{loss}'"
    )
    config.input.pp_eval = "decode|resize(8)|value_range(-1, 1)|keep('image', 'label')"
    config.evals = {
        "train_set": {
            "kind": "classification",
            "data": {"kind": "folder", "root": str(class_folders)},
            "ood_data": {"kind": "folder", "root": str(class_folders)},  # same images: 0.5
            "dirichlet": True,
        }
    }
    final = train(config, tmp_path, evaluate=evaluator_from_config(config, tmp_path))
    for name in ("total", "data", "knowledge", "epkl", "mkl"):
        assert final[f"train_set/dirichlet_{name}_uncertainty"] >= 0
        assert final[f"train_set/dirichlet_{name}_ood_auroc"] == pytest.approx(0.5)
    total = final["train_set/dirichlet_total_uncertainty"]
    assert total == pytest.approx(
        final["train_set/dirichlet_data_uncertainty"]
        + final["train_set/dirichlet_knowledge_uncertainty"],
        rel=1e-6,
    )
    assert 0 < total <= np.log(4) + 1e-9
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(np.isfinite(m["loss"]) and m["finite"] == 1 for m in metrics)
    assert all(m["teacher_precision"] > 0 for m in metrics)
    state = read_checkpoint(tmp_path / "checkpoints")["params"]
    for member, name in enumerate(("det0", "det1")):
        own = read_checkpoint(f"{teachers[name]}/checkpoints")["params"]
        for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(state["teachers"]), strict=True):
            np.testing.assert_array_equal(a, b[member])  # bit-identical: frozen
    # The student keeps a classifier's parameter names, beside the stacked teachers.
    assert set(state) == {"img", "head", "teachers"}
    assert json.loads((tmp_path / "config.json").read_text())["distill"]["loss"] == loss


def test_encode_gives_the_teachers_proxy_target(teachers, class_folders):
    config = _student(class_folders, [teachers["det0"], teachers["det1"]])
    student = build_model(config.model)
    objective = distill.objective_from_config(student, config.distill)
    teacher_model = build_model(distill.teacher_config([teachers["det0"], teachers["det1"]]))
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    batch = {"image": images}
    params = student.init(jax.random.PRNGKey(0), batch)["params"]
    members = [read_checkpoint(f"{teachers[n]}/checkpoints")["params"] for n in ("det0", "det1")]
    params = {**params, "teachers": jax.tree.map(lambda *x: np.stack(x), *members)}
    reps = objective.encode(params, batch, jax.random.PRNGKey(1), False)
    member_logits = [
        teacher_model.head.apply(
            {"params": m["head"]},
            teacher_model.apply({"params": m}, batch)["phi"],
            mode="locs",
        )
        for m in members
    ]
    stats = ensemble_targets.scan_members(lambda x: x, np.stack(member_logits))
    target = ensemble_targets.proxy_target(stats)
    np.testing.assert_allclose(reps["teacher_mean_probs"], target.mean_probs, rtol=1e-5)
    np.testing.assert_allclose(reps["teacher_precision"], target.precision, rtol=1e-4)
    value, _ = objective.loss(params, reps, batch, None)
    logits = student.head.apply({"params": params["head"]}, reps["phi"], mode="locs")
    expected = dirichlet.proxy_dirichlet_loss(logits, target).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_a_hetxl_teachers_samples_are_members(teachers, class_folders, tmp_path, monkeypatch):
    # Teacher workdirs given relative to the current directory work too.
    monkeypatch.chdir(Path(teachers["hetxl"]).parent)
    config = _student(class_folders, ["hetxl"], members="samples")
    train(config, tmp_path)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(m["loss"]) and np.isfinite(m["teacher_precision"]) for m in metrics)


def test_bad_distillation_configs_name_the_fix(teachers, class_folders, tmp_path):
    with pytest.raises(ValueError, match="needs teachers"):
        load_config("fashion_mnist_distill.py")
    with pytest.raises(ValueError, match="distill.loss must be one of"):
        train(_student(class_folders, [teachers["det0"]], loss="'kl'"), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        train(_student(class_folders, [str(tmp_path / "nowhere")]), tmp_path / "b")
    with pytest.raises(ValueError, match="share one model config"):
        train(_student(class_folders, [teachers["det0"], teachers["hetxl"]]), tmp_path / "c")
    with pytest.raises(ValueError, match="DET head"):
        train(_student(class_folders, [teachers["det0"]], "model.head.kind=hetxl"), tmp_path / "d")
    with pytest.raises(ValueError, match="ONE HET"):
        train(_student(class_folders, [teachers["hetxl"]] * 2, members="samples"), tmp_path / "e")
