"""Evaluation of supervised classifiers: accuracy, calibration and uncertainty of their heads.

  {"kind": "classification", "split": S}   the config's data set at split S, or "data": any
        labelled source spec (then "pp" defaults to the image ops of config.input.pp_eval)
  "mc_samples"  noise samples of HET / HET-XL heads (default: the head's own num_samples)
  "ood_split" / "ood_data"  images of other classes or domains, for OOD detection AUROC

Softmax heads report probs_metrics (evals.zeroshot) of the deterministic prediction
softmax(locs) and, for HET / HET-XL, of the MC predictive p(y|x) ~ (1/S) sum_s softmax(l_s)
("mc_" keys, HET-XL paper eq. 4) with its total / data / knowledge uncertainty, misclassification
detection by the total uncertainty and OOD AUROC. Sigmoid (multi-label) heads report top-1 / top-5
accuracy, the mean binary cross-entropy against the one-hot label and the ECE of the top-1
class's sigmoid probability; their OOD score is 1 - the largest probability.
{"kind": "feature_probe", "train_data": SOURCE, "data": SOURCE} fits a ridge linear probe
(evals.probes) on the frozen pre-logits of a downstream labelled set and reports its test
accuracy ("lp_acc1"): how well the pre-trained features transfer (the class-budget study's
score, hetclip/train/class_grid.py).
"dirichlet": True (for a distilled student, hetclip/train/distill.py) reads the logits as a
Dirichlet's log-concentrations (alpha = exp(z) + 1) and adds its closed-form total / data /
knowledge uncertainty, EPKL and MKL (evals.uncertainty.dirichlet_uncertainty; "dirichlet_"
keys) and, with OOD data, OOD AUROC by each of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hetclip.train.embedder import Embedder

ROWS_PER_CALL = 256  # examples per head call: bounds the [rows, S, K] sample probabilities


def _head_outputs(embedder: Embedder, params, phi: np.ndarray, num_samples: int, seed: int):
    """(locs [N, K], mean MC probabilities [N, K] or None, per-example uncertainty dict)."""
    from evals.uncertainty import uncertainty_decomposition

    head = embedder.model.head.clone(parent=None, name=None)
    variables = {"params": params["head"]}
    locs_fn = jax.jit(lambda x: head.apply(variables, x, mode="locs"))
    stochastic = head.stochastic and num_samples > 0
    samples_fn = jax.jit(
        lambda x, key: head.apply(
            variables, x, mode="sample_probs", num_samples=num_samples, key=key
        )
    )
    locs, mean_probs, parts = [], [], {"total": [], "data": [], "knowledge": []}
    key = jax.random.PRNGKey(seed)
    for start in range(0, len(phi), ROWS_PER_CALL):
        rows = phi[start : start + ROWS_PER_CALL]
        locs.append(np.asarray(locs_fn(rows)))
        if not stochastic:
            continue
        sample_probs = np.asarray(samples_fn(rows, jax.random.fold_in(key, start)), np.float64)
        if head.form == "sigmoid":
            mean_probs.append(sample_probs.mean(axis=1))
            continue
        decomposed = uncertainty_decomposition(sample_probs[:, s] for s in range(num_samples))
        mean_probs.append(decomposed["mean_probs"])
        for name in parts:
            parts[name].append(decomposed[name])
    return (
        np.concatenate(locs),
        np.concatenate(mean_probs) if mean_probs else None,
        {k: np.concatenate(v) for k, v in parts.items() if v},
    )


def _sigmoid_metrics(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict:
    from evals.calibration import bins_calibration_error, confidence_bins, top_k_accuracy

    one_hot = np.eye(probs.shape[1])[labels]
    clipped = np.clip(probs, 1e-12, 1 - 1e-12)
    correct = probs.argmax(-1) == labels
    return {
        "acc1": top_k_accuracy(probs, labels, 1),
        "acc5": top_k_accuracy(probs, labels, min(5, probs.shape[1])),
        "binary_nll": float(
            -np.mean(one_hot * np.log(clipped) + (1 - one_hot) * np.log(1 - clipped))
        ),
        "ece": bins_calibration_error(confidence_bins(probs.max(-1), correct, num_bins)),
    }


DIRICHLET_MEASURES = ("total", "data", "knowledge", "epkl", "mkl")


def _dirichlet_measures(locs: np.ndarray) -> dict[str, np.ndarray]:
    """evals.uncertainty.dirichlet_uncertainty of the student Dirichlet Dir(exp(z) + 1)."""
    from evals.uncertainty import dirichlet_uncertainty
    from hetclip.losses.dirichlet import MAX_LOG_CONCENTRATION

    logits = np.minimum(np.asarray(locs, np.float64), MAX_LOG_CONCENTRATION)
    return dirichlet_uncertainty(np.exp(logits) + 1.0)


def _pass(embedder: Embedder, params, spec: Mapping[str, Any], split_key: str, data_key: str):
    """{"phi", "label"} of one pass over spec[split_key] (config data) or spec[data_key]."""
    if spec.get(data_key) is not None:
        pipeline = embedder.labelled_pipeline(spec[data_key], "label", spec.get("pp"))
    else:
        pipeline = embedder.pipeline(split=spec[split_key], pp=spec.get("pp"))
    return embedder.collect(
        params, pipeline, ("image",), extra=lambda local: {"label": local["label"]}
    )


def classification(embedder: Embedder, params, spec: Mapping[str, Any], out: Path | None):
    """Metrics of a classifier on one labelled pass (see the module docstring)."""
    from evals.uncertainty import entropy, ood_auroc
    from evals.zeroshot import probs_metrics, softmax

    if "split" not in spec and "data" not in spec:
        raise ValueError("A classification eval needs a 'split' of the config's data or 'data'.")
    head = embedder.model.head
    num_samples = int(spec.get("mc_samples", head.num_samples))
    seed = int(spec.get("mc_seed", 0))
    images = _pass(embedder, params, spec, "split", "data")
    labels = images["label"].astype(np.int64)
    if labels.min() < 0 or labels.max() >= head.num_classes:
        raise ValueError(
            f"Labels run from {labels.min()} to {labels.max()}; the head has {head.num_classes} "
            "classes. Evaluate on a data set labelled with the training classes."
        )
    locs, mc_probs, parts = _head_outputs(embedder, params, images["phi"], num_samples, seed)
    sigmoid = head.form == "sigmoid"
    probs = 1 / (1 + np.exp(-locs.astype(np.float64))) if sigmoid else softmax(locs)
    metric_fn = _sigmoid_metrics if sigmoid else probs_metrics
    metrics = metric_fn(probs, labels)
    if mc_probs is not None:
        mc = metric_fn(mc_probs, labels)
        metrics.update({f"mc_{k}": v for k, v in mc.items()})
        for name, values in parts.items():
            metrics[f"mc_{name}_uncertainty"] = float(values.mean())
    dirichlet = _dirichlet_measures(locs) if spec.get("dirichlet") else None
    if dirichlet is not None:
        for name in DIRICHLET_MEASURES:
            metrics[f"dirichlet_{name}_uncertainty"] = float(dirichlet[name].mean())
    if spec.get("ood_split") or spec.get("ood_data"):
        ood = _pass(embedder, params, spec, "ood_split", "ood_data")
        ood_locs, ood_mc, ood_parts = _head_outputs(
            embedder, params, ood["phi"], num_samples, seed + 1
        )

        def score(logits, mc_probs=None):
            if sigmoid:
                p = mc_probs if mc_probs is not None else 1 / (1 + np.exp(-logits))
                return 1 - p.max(-1)
            return entropy(mc_probs if mc_probs is not None else softmax(logits))

        metrics["ood_auroc"] = ood_auroc(score(locs), score(ood_locs))
        if mc_probs is not None:
            in_score = parts["total"] if parts else score(locs, mc_probs)
            out_score = ood_parts["total"] if ood_parts else score(ood_locs, ood_mc)
            metrics["mc_ood_auroc"] = ood_auroc(in_score, out_score)
        if dirichlet is not None:
            ood_dirichlet = _dirichlet_measures(ood_locs)
            for name in DIRICHLET_MEASURES:
                metrics[f"dirichlet_{name}_ood_auroc"] = ood_auroc(
                    dirichlet[name], ood_dirichlet[name]
                )
    if out is not None:
        saved = {"locs": locs, "probs": probs, "labels": labels, "form": np.asarray(head.form)}
        if mc_probs is not None:
            saved["mc_probs"] = mc_probs
        np.savez(out, **saved)
    return metrics


def feature_probe(embedder: Embedder, params, spec: Mapping[str, Any], out: Path | None):
    """{"lp_acc1", "l2"} of a ridge probe on pre-logits phi [N, D] of spec["train_data"],
    tested on spec["data"] (see the module docstring)."""
    from evals.probes import ridge_probe

    missing = {"train_data", "data"} - set(spec)
    if missing:
        raise ValueError(f"A feature_probe eval needs source specs for {sorted(missing)}.")
    train = _pass(embedder, params, spec, "train_split", "train_data")
    test = _pass(embedder, params, spec, "split", "data")
    train_y, test_y = train["label"].astype(np.int64), test["label"].astype(np.int64)
    if train_y.min() < 0 or test_y.min() < 0:
        raise ValueError("feature_probe needs labelled sets (labels >= 0).")
    classes = int(max(train_y.max(), test_y.max())) + 1
    metrics = ridge_probe(train["phi"], train_y, test["phi"], test_y, num_classes=classes)
    if out is not None:
        np.savez(out, train_x=train["phi"], train_y=train_y, test_x=test["phi"], test_y=test_y)
    return metrics
