"""Zero-shot classification with prompt ensembles, on toy encoders built to be right."""

import numpy as np
import pytest

from evals.zeroshot import (
    class_embeddings,
    imagenet_prompts,
    mc_zero_shot_metrics,
    multilabel_zero_shot_metrics,
    softmax,
    zero_shot_logits,
    zero_shot_metrics,
)


def test_shipped_prompts_are_clips_class_names_and_80_templates():
    prompts = imagenet_prompts()
    assert len(prompts["class_names"]) == 1000 and len(prompts["templates"]) == 80
    assert prompts["class_names"][:2] == ["tench", "goldfish"]
    assert all("{c}" in t for t in prompts["templates"] + prompts["simple_templates"])


class ToyEncoder:
    """Embeds a prompt as the one-hot of the class name it mentions plus template noise."""

    def __init__(self, class_names):
        self.class_names, self.calls = class_names, 0

    def __call__(self, prompts):
        self.calls += 1
        out = np.zeros((len(prompts), len(self.class_names) + 1), np.float32)
        for row, prompt in enumerate(prompts):
            out[row, next(i for i, c in enumerate(self.class_names) if c in prompt)] = 1.0
            out[row, -1] = 0.3 if "sketch" in prompt else -0.3  # template-specific direction
        return out


def test_embeddings_built_to_be_correct_give_perfect_zero_shot_accuracy(tmp_path):
    names = ["cat", "dog", "bird", "fish"]
    encoder = ToyEncoder(names)
    templates = ["a photo of a {c}.", "a sketch of a {c}."]
    classes = class_embeddings(
        encoder, names, templates, batch_size=3, cache_dir=tmp_path, model_id="toy"
    )
    # The template directions cancel in the ensemble: each class is exactly its one-hot.
    np.testing.assert_allclose(classes[:, :4], np.eye(4), atol=1e-6)
    labels = np.array([0, 1, 2, 3, 2, 1])
    images = np.eye(5)[labels] + 0.05
    logits = zero_shot_logits(images, classes, logit_scale=10.0)
    metrics = zero_shot_metrics(logits, labels)
    assert metrics["acc1"] == 1.0 and metrics["mean_per_class_recall"] == 1.0
    assert 0 < metrics["nll"] < 0.01 and metrics["ece"] < 0.01
    # A learned scale below the needed one gives the same accuracy but a worse calibration.
    soft = zero_shot_metrics(zero_shot_logits(images, classes, logit_scale=1.0), labels)
    assert soft["acc1"] == 1.0 and soft["nll"] > metrics["nll"] and soft["ece"] > 0.3


def test_class_embeddings_are_cached_per_model_and_prompts(tmp_path):
    names = ["cat", "dog"]
    encoder = ToyEncoder(names)
    first = class_embeddings(encoder, names, ["a {c}"], cache_dir=tmp_path, model_id="m1")
    calls = encoder.calls
    again = class_embeddings(encoder, names, ["a {c}"], cache_dir=tmp_path, model_id="m1")
    assert encoder.calls == calls  # read back from the cache, not encoded again
    np.testing.assert_array_equal(first, again)
    class_embeddings(encoder, names, ["a {c}"], cache_dir=tmp_path, model_id="m2")
    assert encoder.calls > calls  # another model: its own cache entry
    with pytest.raises(ValueError, match="'{c}'"):
        class_embeddings(encoder, names, ["no placeholder"])


def test_multilabel_scoring_counts_any_correct_label_and_leaves_out_unlabelled_images():
    logits = np.log(
        np.array(
            [
                [0.7, 0.2, 0.1],  # top-1 class 0, which is one of its two labels: right
                [0.6, 0.3, 0.1],  # top-1 0, label set {1}: wrong at 1, right at "5" (K = 3)
                [0.1, 0.1, 0.8],  # no labels: left out
                [0.5, 0.4, 0.1],  # top-1 0, label set {0}: right
            ]
        )
    )
    sets = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)
    metrics = multilabel_zero_shot_metrics(logits, sets, num_bins=10)
    assert metrics["acc1"] == pytest.approx(2 / 3) and metrics["acc5"] == 1.0
    assert metrics["num_scored"] == 3 and metrics["num_unlabelled"] == 1
    # Bins: 0.7 (right), 0.6 (wrong), 0.5 (right) each alone: |1-.7| + |0-.6| + |1-.5|, / 3.
    assert metrics["ece"] == pytest.approx((0.3 + 0.6 + 0.5) / 3)
    # With one label per image it is the ordinary top-1 accuracy.
    labels = np.array([0, 1, 2, 0])
    single = multilabel_zero_shot_metrics(logits, np.eye(3, dtype=bool)[labels])
    assert single["acc1"] == pytest.approx(zero_shot_metrics(logits, labels)["acc1"])
    with pytest.raises(ValueError, match="label_sets must be"):
        multilabel_zero_shot_metrics(logits, sets[:, :2])


def test_mc_metrics_average_probabilities_over_noise_samples():
    labels = np.array([0, 1])
    a = np.log(np.array([[0.9, 0.1], [0.2, 0.8]]))
    b = np.log(np.array([[0.3, 0.7], [0.4, 0.6]]))
    metrics = mc_zero_shot_metrics(iter([a, b]), labels)
    mean = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert metrics["mc_acc1"] == 1.0
    assert metrics["mc_nll"] == pytest.approx(-np.mean(np.log([0.6, 0.7])))
    assert metrics["mc_brier"] == pytest.approx(np.mean(np.sum((mean - np.eye(2)) ** 2, -1)))
    entropy = lambda p: -np.sum(p * np.log(p), -1)  # noqa: E731
    data = (entropy(softmax(a)) + entropy(softmax(b))) / 2
    assert metrics["mc_data_uncertainty"] == pytest.approx(data.mean())
    assert metrics["mc_knowledge_uncertainty"] == pytest.approx((entropy(mean) - data).mean())
    # Identical samples: the deterministic metrics, and no spread between samples.
    same = mc_zero_shot_metrics(iter([a, a, a]), labels)
    plain = zero_shot_metrics(a, labels)
    for key in ("acc1", "nll", "ece", "brier"):
        assert same[f"mc_{key}"] == pytest.approx(plain[key])
    assert same["mc_knowledge_uncertainty"] == pytest.approx(0.0, abs=1e-12)


def test_misclassification_detection_is_reported_when_there_are_errors():
    labels = np.array([0, 0, 1, 1])
    # The two wrong predictions are the two least confident ones: a perfect detector.
    logits = np.log(np.array([[0.95, 0.05], [0.45, 0.55], [0.05, 0.95], [0.55, 0.45]]))
    metrics = zero_shot_metrics(logits, labels)
    assert metrics["acc1"] == 0.5
    assert metrics["misclassification_auroc"] == 1.0 and metrics["prr"] == pytest.approx(1.0)
    right = zero_shot_metrics(logits, np.array([0, 1, 1, 0]))
    assert right["acc1"] == 1.0 and "prr" not in right  # undefined without errors
