"""`hetclip eval` end to end: a trained run's work directory, and the same parameters exported
as a big_vision-layout .npz, give identical CLIP_benchmark-schema results."""

import json

import pytest

from hetclip.cli import main
from hetclip.config import load_config
from hetclip.train.checkpoint import read_checkpoint
from hetclip.train.loop import train
from towers.checkpoints import load_params

SPEC = "default.py:size=mu,res=16,batch=8,steps=2"


def test_eval_of_a_run_and_of_its_big_vision_export(
    prepared_imagetext, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))
    config = load_config(SPEC)
    config.eval_every = 0
    train(config, tmp_path / "run")
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "a")]) == 0
    npz = str(tmp_path / "model.npz")
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", npz]) == 0
    exported = load_params(npz, read_checkpoint(tmp_path / "run" / "checkpoints")["params"])
    assert set(exported) == {"img", "txt", "t", "img_noise"}
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "model.npz"),
                "--config",
                SPEC,
                "--out",
                str(tmp_path / "b"),
                "--model-name",
                "tiny",
            ]
        )
        == 0
    )
    files = sorted(p.name for p in (tmp_path / "b").glob("*.json"))
    assert files == [
        "imagetext_heldout_zeroshot_classification.json",
        "imagetext_test_probe_linear_probe.json",
        "imagetext_test_retrieval_zeroshot_retrieval.json",
        "imagetext_test_zeroshot_classification.json",
    ]
    for name in files:
        a = json.loads((tmp_path / "a" / name).read_text())
        b = json.loads((tmp_path / "b" / name).read_text())
        assert set(b) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
        assert b["model"] == "tiny"
        for key, value in a["metrics"].items():
            assert b["metrics"][key] == pytest.approx(value, abs=1e-6)
    zeroshot = json.loads((tmp_path / "b" / files[0]).read_text())["metrics"]
    assert {"acc1", "acc5", "mean_per_class_recall", "ece", "nll"} <= set(zeroshot)
    probe = json.loads((tmp_path / "b" / files[1]).read_text())["metrics"]
    # The planted set is tiny: the probe reports how many test examples it could score.
    assert probe["lp_num_test"] >= 0
    assert ("lp_acc1" in probe) == (probe["lp_num_test"] > 0)
    retrieval = json.loads((tmp_path / "b" / files[2]).read_text())["metrics"]
    assert "image_retrieval_recall@5" in retrieval and "text_retrieval_recall@5" in retrieval
    assert "| imagetext_heldout | zeroshot_classification | acc1 |" in (
        (tmp_path / "b" / "results.md").read_text()
    )
    assert (tmp_path / "b" / "results.csv").read_text().startswith("dataset,task,")


def test_eval_errors_name_the_fix(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "pass --config" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path),
                "--config",
                SPEC,
                "--suite",
                "nope",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "Unknown suite" in capsys.readouterr().err
