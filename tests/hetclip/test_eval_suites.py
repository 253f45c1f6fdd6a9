"""`hetclip eval` end to end: a trained run's work directory, and the same parameters exported
as a big_vision-layout .npz, give identical CLIP_benchmark-schema results."""

import json

import numpy as np
import pytest

from hetclip.cli import main
from hetclip.config import load_config
from hetclip.eval_suites import run_suite
from hetclip.train.checkpoint import read_checkpoint
from hetclip.train.loop import train
from tests.helpers import image_bytes, write
from towers.checkpoints import load_params

SPEC = "default.py:size=mu,res=16,batch=8,steps=2"


@pytest.fixture(scope="module")
def tiny_run(prepared_imagetext, tmp_path_factory):
    """A work directory with a 2-step HET-XL CLIP run of the default config at tiny size."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))
        config = load_config(SPEC)
        config.eval_every = 0
        train(config, run)
    return run


@pytest.fixture
def data_dir(prepared_imagetext, monkeypatch):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))


def test_eval_of_a_run_and_of_its_big_vision_export(tiny_run, data_dir, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "a")]) == 0
    npz = str(tmp_path / "model.npz")
    assert main(["export", "--checkpoint", str(tiny_run), "--out", npz]) == 0
    exported = load_params(npz, read_checkpoint(tiny_run / "checkpoints")["params"])
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
    assert {"acc1", "acc5", "mean_per_class_recall", "ece", "nll", "brier"} <= set(zeroshot)
    # The default model has HET-XL image noise: MC-averaged zero-shot metrics come with it.
    assert {"mc_acc1", "mc_ece", "mc_nll", "mc_knowledge_uncertainty"} <= set(zeroshot)
    # imagetext_test holds out categories as OOD images: deterministic and MC AUROCs.
    test_zeroshot = json.loads((tmp_path / "b" / files[3]).read_text())["metrics"]
    assert 0 <= test_zeroshot["ood_auroc"] <= 1 and 0 <= test_zeroshot["mc_ood_auroc"] <= 1
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
    # Reliability diagrams of the single-label zero-shot predictions, none for retrieval.
    pngs = sorted(p.name for p in (tmp_path / "b").glob("*.png"))
    assert pngs == ["imagetext_heldout_reliability.png", "imagetext_test_reliability.png"]


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


def test_imagenet_suite_on_tfds_mock_data(tiny_run, data_dir, tmp_path):
    import tensorflow_datasets as tfds

    tfds_dir, out = tmp_path / "tfds", tmp_path / "out"
    logs: list[str] = []
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tfds_dir)):
        results = run_suite(tiny_run, "imagenet", out, tfds_data_dir=str(tfds_dir), log=logs.append)
    by_name = {r["dataset"]: r["metrics"] for r in results}
    assert set(by_name) == {"imagenet1k", "imagenetv2", "imagenet1k_real"}
    for name in ("imagenet1k", "imagenetv2"):
        metrics = by_name[name]
        assert 0 <= metrics["acc1"] <= metrics["acc5"] <= 1 and metrics["nll"] > 0
        assert 0 <= metrics["mc_acc1"] <= 1
        outputs = np.load(out / f"{name}_outputs.npz")
        assert outputs["logits"].shape == (6, 1000) and len(outputs["class_names"]) == 1000
    real = by_name["imagenet1k_real"]
    assert real["num_scored"] + real["num_unlabelled"] == 6 and 0 <= real["acc1"] <= 1
    # 1,000 classes x 80 prompts were encoded once and shared by the three data sets.
    assert len(list((out / "cache").glob("class_embeddings-*.npy"))) == 1


def test_imagenet_suite_without_the_data_says_how_to_build_it(tiny_run, data_dir, tmp_path):
    logs: list[str] = []
    with pytest.raises(FileNotFoundError, match="tfds build"):
        run_suite(
            tiny_run, "imagenet", tmp_path / "o", tfds_data_dir=str(tmp_path), log=logs.append
        )
    assert sum("skipped" in line for line in logs) == 3


def test_folder_suite_uses_the_folder_names_as_classes(tiny_run, data_dir, tmp_path):
    root = tmp_path / "shapes"
    for index, name in enumerate(["red_square", "blue-circle"]):
        for k in range(3):
            write(root / name / f"{k}.png", image_bytes(20, 20, seed=10 * index + k))
    (root / "red_square" / "notes.txt").write_text("not an image")
    results = run_suite(tiny_run, "folder", tmp_path / "out", folder=str(root), log=print)
    assert [r["dataset"] for r in results] == ["shapes"]
    assert 0 <= results[0]["metrics"]["acc1"] <= 1
    outputs = np.load(tmp_path / "out" / "shapes_outputs.npz")
    assert outputs["class_names"].tolist() == ["blue circle", "red square"]
    assert outputs["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="--folder"):
        run_suite(tiny_run, "folder", tmp_path / "o2")


def test_suites_check_the_model_kind(tmp_path):
    classifier = load_config("fashion_mnist.py:size=mu")
    with pytest.raises(ValueError, match="--suite supervised"):
        run_suite(tmp_path, "imagetext", tmp_path / "o", config_spec=classifier)
    with pytest.raises(ValueError, match="evaluates classifiers"):
        run_suite(tmp_path, "supervised", tmp_path / "o", config_spec=load_config(SPEC))


def test_an_ensemble_of_identical_members_equals_the_member(tiny_run, data_dir, tmp_path):
    out = tmp_path / "ens"
    args = ["eval", "--checkpoint", str(tiny_run), "--checkpoint", str(tiny_run), "--out", str(out)]
    assert main(args) == 0
    name = "imagetext_heldout_zeroshot_classification.json"
    ensemble = json.loads((out / name).read_text())
    member = json.loads((out / "member_0" / name).read_text())["metrics"]
    assert ensemble["model"] == "ensemble of 2"
    for key in ("acc1", "acc5", "ece", "nll", "brier"):
        assert ensemble["metrics"][key] == pytest.approx(member[key], abs=1e-6)
    # Members that agree everywhere carry no knowledge (mutual information) uncertainty.
    assert ensemble["metrics"]["knowledge_uncertainty"] == pytest.approx(0.0, abs=1e-9)
    assert ensemble["metrics"]["total_uncertainty"] > 0
    # Retrieval and probes have no predictive distribution to average.
    assert sorted(p.name for p in out.glob("*.json")) == [
        "imagetext_heldout_zeroshot_classification.json",
        "imagetext_test_zeroshot_classification.json",
    ]


def test_example_inputs_follow_the_eval_preprocessing_without_the_data(data_dir):
    from hetclip.eval_suites import example_inputs

    inputs = example_inputs(load_config(SPEC))  # only the tokenizer is read
    assert inputs["image"].shape == (1, 16, 16, 3) and inputs["text"].shape == (1, 16)
    classifier = example_inputs(load_config("fashion_mnist.py:size=mu"))
    assert set(classifier) == {"image"} and classifier["image"].shape == (1, 32, 32, 3)
