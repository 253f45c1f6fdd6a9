"""Evaluation of two-tower models: zero-shot classification, retrieval and linear probes.

config.evals (and the suites of hetclip.eval_suites) map a name to a spec:
  {"kind": "zeroshot", "split": S}    classify a prepared split into the display names of its
        categories (from the data set's manifest, so held-out categories never seen in
        training work)
  {"kind": "zeroshot", "data": SOURCE, "classes": ..., "templates": ..., "pp": ...,
   "multilabel": bool}               any labelled source (TFDS imagenet2012 / imagenet_v2, an
        image folder, ...); classes is a list, "imagenet" or "imagenet21k" (default: the
        source's own class names); multilabel scores "any correct" against the source's
        "labels" multi-hot; pp defaults to the image ops of config.input.pp_eval
  templates: a list of prompts with '{c}', or "imagenet" (CLIP's 80), "imagenet_simple" (7),
        "default"; mc_samples: HET-XL noise samples for the "mc_" metrics (default 32, 0: off);
        ood_split: a prepared split of other categories, for OOD detection AUROC
  {"kind": "retrieval", "split": S}, {"kind": "linear_probe", "train_split": T, "split": S}
  {"kind": "classification", ...}, {"kind": "feature_probe", ...}   supervised classifiers
        (hetclip.train.classifier_evals)
Embeddings come from the deterministic towers; models with HET-XL image noise also get
MC-averaged zero-shot predictions. Each evaluation also saves its raw outputs
(workdir/evals/NAME.npz: logits and labels, or embeddings) for reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hetclip.train.classifier_evals import classification, feature_probe
from hetclip.train.embedder import Embedder

TWO_TOWER_KINDS = ("zeroshot", "retrieval", "linear_probe")
CLASSIFIER_KINDS = ("classification", "feature_probe")
DEFAULT_TEMPLATES = ("{c}", "a picture of {c}.", "a drawing of {c}.", "an icon of {c}.")
DEFAULT_MC_SAMPLES = 32  # HET-XL noise samples of MC-averaged zero-shot predictions


def display_name(category: str) -> str:
    """'openclipart/animals/farm_animals' -> 'farm animals' (the words a caption would use)."""
    return category.rstrip("/").split("/")[-1].replace("_", " ").replace("-", " ").strip()


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def _split_categories(config, split: str) -> list[str]:
    from data_pipelines.paths import data_dir
    from data_pipelines.sources.tfrecord import read_manifest

    data = config.input.data
    if data.get("kind") != "prepared":
        raise ValueError(
            "Zero-shot evals during training need a prepared data set (its manifest "
            "lists each split's categories); use `hetclip eval` for other sources."
        )
    manifest = read_manifest(data["name"], Path(data.get("dir") or data_dir() / data["name"]))
    if split not in manifest.get("categories", {}):
        raise ValueError(f"The {data['name']} manifest lists no categories for split {split!r}.")
    return manifest["categories"][split]


def _labeller(names: list[str]) -> Callable[[dict], np.ndarray]:
    """Eval-batch -> [B] index of each example's category display name in `names`."""
    index = {name: i for i, name in enumerate(names)}

    def labels_of(local: dict) -> np.ndarray:
        return np.asarray(
            [
                index[display_name(f"{s}/{c}")]
                for s, c in zip(_decode(local["source"]), _decode(local["category"]), strict=True)
            ],
            np.int32,
        )

    return labels_of


def _named_list(value, named: Mapping[str, Callable[[], list[str]]], what: str) -> list[str]:
    if isinstance(value, str):
        if value not in named:
            raise ValueError(f"Unknown {what} set {value!r}; use a list or one of {sorted(named)}.")
        return list(named[value]())
    return list(value)


def _prompts(key: str) -> list[str]:
    from evals.zeroshot import imagenet_prompts

    return list(imagenet_prompts()[key])


def _imagenet21k_names() -> list[str]:
    from evals.imagenet21k import imagenet21k_class_names

    return imagenet21k_class_names()


TEMPLATE_SETS = {
    "imagenet": lambda: _prompts("templates"),  # CLIP's 80 ImageNet prompts
    "imagenet_simple": lambda: _prompts("simple_templates"),
    "default": lambda: list(DEFAULT_TEMPLATES),
}
CLASS_SETS = {"imagenet": lambda: _prompts("class_names"), "imagenet21k": _imagenet21k_names}


def _source_images(embedder: Embedder, params, spec: Mapping[str, Any]):
    """(class names, {"zimg", noise outputs, "label" or "labels"}) of a labelled data source:
    TFDS (imagenet2012, imagenet_v2, ...), an image folder, or any other source kind."""
    multilabel = bool(spec.get("multilabel", False))
    label_key = "labels" if multilabel else "label"
    pipeline = embedder.labelled_pipeline(spec["data"], label_key, spec.get("pp"))
    if "classes" in spec:
        names = _named_list(spec["classes"], CLASS_SETS, "class")
    elif hasattr(pipeline.source, "class_names"):
        names = [display_name(n) for n in pipeline.source.class_names()]
    else:
        raise ValueError(f"Name the classes of {spec['data']} with 'classes' (a list or a set).")
    images = embedder.collect(
        params, pipeline, ("image",), extra=lambda local: {label_key: local[label_key]}
    )
    return names, images


def _manifest_images(embedder: Embedder, params, spec: Mapping[str, Any]):
    """(class names, image outputs with "label") of a prepared split: its categories' names."""
    names = sorted({display_name(c) for c in _split_categories(embedder.config, spec["split"])})
    labels_of = _labeller(names)
    images = embedder.collect(
        params,
        embedder.pipeline(spec["split"]),
        ("image",),
        extra=lambda local: {"label": labels_of(local)},
    )
    return names, images


def _noisy_logits(params, images: dict, classes: np.ndarray, logit_scale: float, spec):
    """S logits [N, K] of HET-XL image-embedding samples: t (z + eps_s) C^T (the worlds the
    contrastive loss trains on; hetclip.losses.het_contrastive), one sample at a time."""
    from flax.core import meta

    from hetclip.heads.noise import sample_low_rank_noise

    factors = np.asarray(meta.unbox(params["img_noise"])["factors"])
    key = jax.random.PRNGKey(int(spec.get("mc_seed", 0)))
    for s in range(int(spec["mc_samples"])):
        eps = sample_low_rank_noise(
            jax.random.fold_in(key, s), factors, images["img_scale"], images["img_diag"], 1
        )[:, 0]
        yield logit_scale * (images["zimg"] + np.asarray(eps)) @ classes.T


def _zero_shot_ood(embedder, params, spec, images, classes, logit_scale: float, mc_totals):
    """OOD detection AUROC of the zero-shot prediction: images of the prepared split
    spec["ood_split"] (categories none of the class names describe) against `images`, scored
    by the entropy of the deterministic prediction and, with HET-XL noise, the MC total
    uncertainty (mc_totals [N]: that of `images`, already computed for the mc_ metrics)."""
    from evals.uncertainty import entropy, ood_auroc, uncertainty_decomposition
    from evals.zeroshot import softmax, zero_shot_logits

    ood = embedder.collect(params, embedder.pipeline(spec["ood_split"]), ("image",))
    metrics = {
        "ood_auroc": ood_auroc(
            entropy(softmax(zero_shot_logits(images["zimg"], classes, logit_scale))),
            entropy(softmax(zero_shot_logits(ood["zimg"], classes, logit_scale))),
        )
    }
    if mc_totals is not None:
        ood_totals = uncertainty_decomposition(
            softmax(logits) for logits in _noisy_logits(params, ood, classes, logit_scale, spec)
        )["total"]
        metrics["mc_ood_auroc"] = ood_auroc(mc_totals, ood_totals)
    return metrics


def zero_shot(embedder: Embedder, params, spec: Mapping[str, Any], out: Path | None):
    """Zero-shot classification of a prepared split into its categories' names, or (with
    "data") of any labelled source; HET-XL models also get MC-averaged ("mc_") metrics."""
    from evals.uncertainty import uncertainty_decomposition
    from evals.zeroshot import (
        class_embeddings,
        decomposed_metrics,
        multilabel_zero_shot_metrics,
        softmax,
        zero_shot_logits,
        zero_shot_metrics,
    )

    if "data" in spec:
        names, images = _source_images(embedder, params, spec)
    else:
        names, images = _manifest_images(embedder, params, spec)
    cache_dir, model_id = embedder.class_cache or (None, "")
    classes = class_embeddings(
        lambda prompts: embedder.texts(params, prompts),
        names,
        _named_list(spec.get("templates", "default"), TEMPLATE_SETS, "template"),
        cache_dir=cache_dir,
        model_id=model_id,
    )
    logit_scale = float(np.exp(np.asarray(params["t"])[0]))
    logits = zero_shot_logits(images["zimg"], classes, logit_scale)
    if "labels" in images:
        metrics = multilabel_zero_shot_metrics(logits, images["labels"])
        labels = images["labels"]
    else:
        labels = images["label"]
        if labels.min() < 0 or labels.max() >= len(names):
            raise ValueError(
                f"Labels run from {labels.min()} to {labels.max()} but there are {len(names)} "
                "class names; give the data set's full class list in 'classes'."
            )
        metrics = zero_shot_metrics(logits, labels)
        mc = "img_scale" in images and int(spec.get("mc_samples", DEFAULT_MC_SAMPLES)) > 0
        spec = {"mc_samples": DEFAULT_MC_SAMPLES, **spec}
        mc_totals = None
        if mc:  # HET-XL eq. 4's MC average: decomposed once, for the mc_ and OOD metrics
            parts = uncertainty_decomposition(
                softmax(s) for s in _noisy_logits(params, images, classes, logit_scale, spec)
            )
            metrics.update(decomposed_metrics(parts, labels, prefix="mc_"))
            mc_totals = parts["total"]
        if spec.get("ood_split"):
            metrics.update(
                _zero_shot_ood(embedder, params, spec, images, classes, logit_scale, mc_totals)
            )
    if out is not None:
        np.savez(out, logits=logits, labels=labels, class_names=np.asarray(names))
    return metrics


def linear_probe(embedder: Embedder, params, spec: Mapping[str, Any], out: Path | None):
    """Ridge linear probe and 5-shot on image embeddings: fit on `train_split` (regulariser
    chosen on a carve-out of it), score on `split`'s examples of the categories both share."""
    from evals.probes import few_shot, ridge_probe

    train_split, split = spec.get("train_split", "train"), spec["split"]
    names = sorted(
        {display_name(c) for c in _split_categories(embedder.config, train_split)}
        | {display_name(c) for c in _split_categories(embedder.config, split)}
    )
    train_x, _, train_y = embedder.split(params, train_split, _labeller(names))
    test_x, _, test_y = embedder.split(params, split, _labeller(names))
    seen = np.isin(test_y, train_y)
    metrics: dict[str, float] = {"lp_num_test": float(seen.sum())}
    if not seen.any():  # no test example of a category the probe was trained on
        return metrics
    metrics.update(
        ridge_probe(train_x, train_y, test_x[seen], test_y[seen], num_classes=len(names))
    )
    counts = np.bincount(train_y, minlength=len(names))
    shots = int(spec.get("shots", 5))
    eligible = np.flatnonzero(counts >= shots)
    keep_train, keep_test = np.isin(train_y, eligible), np.isin(test_y, eligible)
    # Few-shot needs two classes with `shots` training examples, and test examples of them.
    if len(eligible) >= 2 and keep_test.any():
        remap = np.full(len(names), -1)
        remap[eligible] = np.arange(len(eligible))
        metrics.update(
            few_shot(
                train_x[keep_train],
                remap[train_y[keep_train]],
                test_x[keep_test],
                remap[test_y[keep_test]],
                shots=shots,
                num_classes=len(eligible),
            )
        )
    if out is not None:
        np.savez(out, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    return metrics


def retrieval(embedder: Embedder, params, spec: Mapping[str, Any], out: Path | None):
    from evals.retrieval import retrieval_recall

    zimg, ztxt, _ = embedder.split(params, spec["split"])
    if out is not None:
        np.savez(out, image=zimg, text=ztxt)
    return retrieval_recall(zimg, ztxt, np.arange(len(ztxt)))


def evaluator_from_config(config, workdir: str | Path, mesh=None):
    """callable(params, step) -> {"NAME/metric": value} for config.evals, or None without evals."""
    specs = dict(config.get("evals", {}))
    if not specs:
        return None
    from hetclip.models import build_model
    from hetclip.sharding import make_mesh

    kinds = CLASSIFIER_KINDS if config.model.kind == "classifier" else TWO_TOWER_KINDS
    for name, spec in specs.items():
        if spec.get("kind") not in kinds:
            raise ValueError(
                f"evals.{name}.kind must be one of {kinds} for a {config.model.kind} model, "
                f"got {spec.get('kind')!r}."
            )
    state: dict[str, Any] = {}
    out_dir = Path(workdir) / "evals"

    def evaluate(params, step: int) -> dict[str, float]:
        if "embedder" not in state:  # built lazily: the mesh exists once training started
            state["embedder"] = Embedder(
                build_model(config.model), config, mesh or make_mesh(dict(config.mesh))
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = {}
        for name, spec in specs.items():
            run = RUNNERS[spec["kind"]]
            saved = out_dir / f"{name}.npz" if jax.process_index() == 0 else None
            for key, value in run(state["embedder"], params, spec, saved).items():
                metrics[f"{name}/{key}"] = float(value)
        return metrics

    return evaluate


RUNNERS = {
    "zeroshot": zero_shot,
    "retrieval": retrieval,
    "linear_probe": linear_probe,
    "classification": classification,
    "feature_probe": feature_probe,
}
