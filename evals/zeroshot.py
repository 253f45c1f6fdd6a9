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
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from evals.calibration import (
    bins_calibration_error,
    brier_score,
    confidence_bins,
    expected_calibration_error,
    mean_per_class_recall,
    negative_log_likelihood,
    top_k_accuracy,
)
from evals.uncertainty import auroc, entropy, prediction_rejection_ratio, uncertainty_decomposition

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


def softmax(logits: np.ndarray) -> np.ndarray:
    """[N, K] probabilities (float64) of [N, K] logits."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


def _misclassification(uncertainty: np.ndarray, errors: np.ndarray) -> dict[str, float]:
    """How well `uncertainty` [N] flags the wrong predictions (errors [N] bool): AUROC and the
    prediction rejection ratio; empty when every prediction is right or every one wrong."""
    if errors.all() or not errors.any():
        return {}
    return {
        "misclassification_auroc": auroc(uncertainty, errors),
        "prr": prediction_rejection_ratio(uncertainty, errors),
    }


def probs_metrics(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
    """CLIP_benchmark's acc1 / acc5 / mean_per_class_recall plus our calibration (ECE, NLL,
    Brier) and misclassification-detection (entropy as the score) metrics of probs [N, K]."""
    errors = probs.argmax(-1) != np.asarray(labels)
    return {
        "acc1": top_k_accuracy(probs, labels, 1),
        "acc5": top_k_accuracy(probs, labels, min(5, probs.shape[1])),
        "mean_per_class_recall": mean_per_class_recall(probs, labels),
        "ece": expected_calibration_error(probs, labels, num_bins),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        **_misclassification(entropy(probs), errors),
    }


def zero_shot_metrics(logits: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
    """probs_metrics of the softmax of zero-shot logits [N, K] against labels [N]."""
    return probs_metrics(softmax(logits), labels, num_bins)


def predictive_metrics(
    member_probs: Iterable[np.ndarray], labels: np.ndarray, num_bins: int = 15, prefix: str = ""
) -> dict:
    """Metrics of the average of M predictive distributions [N, K] (an ensemble's members, or
    a HET-XL model's noise samples), consumed one at a time: probs_metrics of the average plus
    the mean total / data / knowledge uncertainty (evals.uncertainty) and misclassification
    detection by the total uncertainty, each key prefixed with `prefix`."""
    return decomposed_metrics(uncertainty_decomposition(member_probs), labels, num_bins, prefix)


def decomposed_metrics(
    parts: dict[str, np.ndarray], labels: np.ndarray, num_bins: int = 15, prefix: str = ""
) -> dict:
    """predictive_metrics of an evals.uncertainty.uncertainty_decomposition already computed,
    so that its per-example uncertainties [N] can serve further metrics (OOD scores) without
    drawing the members again."""
    metrics = {
        f"{prefix}{k}": v
        for k, v in probs_metrics(parts["mean_probs"], labels, num_bins).items()
        if k not in ("misclassification_auroc", "prr")
    }
    errors = parts["mean_probs"].argmax(-1) != np.asarray(labels)
    for name in ("total", "data", "knowledge"):
        metrics[f"{prefix}{name}_uncertainty"] = float(parts[name].mean())
    metrics.update(
        {f"{prefix}{k}": v for k, v in _misclassification(parts["total"], errors).items()}
    )
    return metrics


def mc_zero_shot_metrics(
    sample_logits: Iterable[np.ndarray], labels: np.ndarray, num_bins: int = 15
) -> dict:
    """predictive_metrics ("mc_" keys) of a HET-XL model's MC-averaged zero-shot prediction.

    sample_logits yields S arrays [N, K], the logits of S noise samples of the image embeddings
    (HET-XL eq. 4: p(y | x) ~ (1/S) sum_s softmax(t (z(x) + eps_s) C^T))."""
    return predictive_metrics((softmax(s) for s in sample_logits), labels, num_bins, "mc_")


def multilabel_zero_shot_metrics(
    logits: np.ndarray, label_sets: np.ndarray, num_bins: int = 15
) -> dict:
    """ "Any correct" scoring for images with several right answers (ImageNet-ReaL style).

    label_sets [N, K] (bool multi-hot): a prediction is right when it is any of the image's
    labels; acc5 when any of the top five is. Images without labels are left out and counted
    (num_unlabelled). The ECE uses the top-1 probability against this notion of right."""
    label_sets = np.asarray(label_sets, bool)
    if label_sets.shape != np.shape(logits):
        raise ValueError(
            f"label_sets must be [N, K] like the logits {np.shape(logits)}; got {label_sets.shape}."
        )
    labelled = label_sets.any(-1)
    if not labelled.any():
        raise ValueError("No image has a label: nothing to score.")
    probs, label_sets = softmax(logits)[labelled], label_sets[labelled]
    top = np.argsort(-probs, axis=-1)[:, : min(5, probs.shape[1])]
    hits = np.take_along_axis(label_sets, top, axis=-1)
    right = hits[:, 0]
    return {
        "acc1": float(right.mean()),
        "acc5": float(hits.any(-1).mean()),
        "ece": bins_calibration_error(confidence_bins(probs.max(-1), right, num_bins)),
        "num_scored": float(len(right)),
        "num_unlabelled": float((~labelled).sum()),
        **_misclassification(entropy(probs), ~right),
    }
