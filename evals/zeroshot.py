"""Zero-shot classification: class names x prompt templates -> class embeddings -> logits.

Each class embedding is the mean over templates of the L2-normalised text embeddings of
"template.format(c=class name)", normalised again (CLIP's prompt ensembling). The logits of an
image are logit_scale * <image embedding, class embedding>; unlike peers' fixed x100 scale, the
model's learned logit scale is used, so the softmax probabilities are the model's own and their
calibration (ECE, NLL) is meaningful. Class embeddings are cached on disk keyed by the model id,
the class names and the templates, so 1,000 classes x 80 templates are encoded once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from evals.calibration import (
    expected_calibration_error,
    mean_per_class_recall,
    negative_log_likelihood,
    top_k_accuracy,
)

TextEncoder = Callable[[list[str]], np.ndarray]  # strings -> [N, D] embeddings


def imagenet_prompts() -> dict:
    """{"class_names": 1,000 cleaned ImageNet names, "templates": CLIP's 80 prompt templates,
    "simple_templates": 7 templates} (a data file of ours; see its "source")."""
    text = resources.files("evals").joinpath("data/imagenet_clip_prompts.json").read_text()
    return json.loads(text)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(
    encode: TextEncoder,
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    model_id: str = "",
) -> np.ndarray:
    """[K, D] prompt-ensembled, normalised class embeddings (cached when `cache_dir` is given).

    Templates contain "{c}" where the class name goes."""
    if not class_names or not templates:
        raise ValueError("Zero-shot classification needs class names and at least one template.")
    if any("{c}" not in t for t in templates):
        raise ValueError("Every template needs a '{c}' where the class name goes.")
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(
            json.dumps([model_id, list(class_names), list(templates)]).encode()
        ).hexdigest()[:16]
        cache = Path(cache_dir) / f"class_embeddings-{digest}.npy"
        if cache.exists():
            return np.load(cache, allow_pickle=False)
    prompts = [t.format(c=name) for name in class_names for t in templates]
    parts = [
        np.asarray(encode(prompts[i : i + batch_size]), np.float32)
        for i in range(0, len(prompts), batch_size)
    ]
    per_prompt = _normalize(np.concatenate(parts)).reshape(len(class_names), len(templates), -1)
    embeddings = _normalize(per_prompt.mean(axis=1))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npy")
        np.save(tmp, embeddings, allow_pickle=False)
        tmp.replace(cache)
    return embeddings


def zero_shot_logits(
    image_embeddings: np.ndarray, class_embeddings: np.ndarray, logit_scale: float
) -> np.ndarray:
    """[N, K] = logit_scale * normalised images . class embeddings."""
    return logit_scale * _normalize(np.asarray(image_embeddings, np.float32)) @ class_embeddings.T


def zero_shot_metrics(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
    """CLIP_benchmark's acc1 / acc5 / mean_per_class_recall plus our calibration metrics."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return {
        "acc1": top_k_accuracy(probs, labels, 1),
        "acc5": top_k_accuracy(probs, labels, min(5, probs.shape[1])),
        "mean_per_class_recall": mean_per_class_recall(probs, labels),
        "ece": expected_calibration_error(probs, labels, num_bins),
        "nll": negative_log_likelihood(probs, labels),
    }
