"""Zero-shot classification with prompt ensembles, on toy encoders built to be right."""

import numpy as np
import pytest

from evals.zeroshot import class_embeddings, imagenet_prompts, zero_shot_logits, zero_shot_metrics


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
