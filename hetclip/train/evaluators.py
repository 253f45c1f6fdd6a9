"""In-training evaluation of two-tower models: zero-shot classification and retrieval.

config.evals maps a name to {"kind": "zeroshot" | "retrieval", "split": ...}; zero-shot also
takes "templates" (prompts with '{c}') and classifies into the display names of the split's
categories (from the prepared data set's manifest, so held-out categories never seen in training
work). Embeddings come from the deterministic towers (no noise). Each evaluation also saves its
raw outputs (workdir/evals/NAME.npz: logits and labels, or similarities) for reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

EVAL_KINDS = ("zeroshot", "retrieval", "linear_probe")
DEFAULT_TEMPLATES = ("{c}", "a picture of {c}.", "a drawing of {c}.", "an icon of {c}.")


def display_name(category: str) -> str:
    """'openclipart/animals/farm_animals' -> 'farm animals' (the words a caption would use)."""
    return category.rstrip("/").split("/")[-1].replace("_", " ").replace("-", " ").strip()


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


class TwoTowerEmbedder:
    """Deterministic image / text embeddings of a two_towers model on a mesh."""

    def __init__(self, model, config, mesh):
        from data_pipelines import ops

        self.model, self.config, self.mesh = model, config, mesh
        self._apply = jax.jit(lambda params, batch: model.apply({"params": params}, batch))
        tokenizer = config.input.tokenizer
        defaults = {}
        if tokenizer:
            from data_pipelines.paths import data_dir

            defaults["tokenize"] = {"model": tokenizer.format(data_dir=data_dir())}
        self._tokenize = ops.build(config.input.pp_text, defaults)

    def split(self, params, split: str, labels_of: Callable[[dict], np.ndarray] | None = None):
        """(zimg [N, D], ztxt [N, D], labels [N] or None) over one pass of `split`."""
        from data_pipelines.input import pipeline_from_config
        from hetclip.sharding import global_batch

        pipeline = pipeline_from_config(
            self.config.input, pp_key="pp_eval", split=split, seed=int(self.config.seed)
        )
        images, texts, labels = [], [], []
        for local in pipeline.eval_batches():
            numeric = {"image": local["image"], "text": local["text"], "_mask": local["_mask"]}
            if labels_of is not None:
                numeric["label"] = labels_of(local)
            batch = global_batch(numeric, self.mesh)
            out = self._apply(params, {"image": batch["image"], "text": batch["text"]})
            gathered = multihost_utils.process_allgather(
                {
                    **out,
                    "_mask": batch["_mask"],
                    **({"label": batch["label"]} if labels_of else {}),
                },
                tiled=True,
            )
            keep = np.asarray(gathered["_mask"], bool)
            images.append(np.asarray(gathered["zimg"])[keep])
            texts.append(np.asarray(gathered["ztxt"])[keep])
            if labels_of is not None:
                labels.append(np.asarray(gathered["label"])[keep])
        return (
            np.concatenate(images),
            np.concatenate(texts),
            np.concatenate(labels) if labels_of is not None else None,
        )

    def texts(self, params, strings: list[str], batch_size: int = 256) -> np.ndarray:
        """[N, D] text embeddings of raw strings."""
        import tensorflow as tf

        parts = []
        for start in range(0, len(strings), batch_size):
            chunk = strings[start : start + batch_size]
            tokens = self._tokenize({"text": tf.constant(chunk)})["text"].numpy()
            parts.append(np.asarray(self._apply(params, {"text": tokens})["ztxt"]))
        return np.concatenate(parts)


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


def zero_shot(embedder: TwoTowerEmbedder, params, spec: Mapping[str, Any], out: Path | None):
    from evals.zeroshot import class_embeddings, zero_shot_logits, zero_shot_metrics

    categories = _split_categories(embedder.config, spec["split"])
    names = sorted({display_name(c) for c in categories})
    zimg, _, labels = embedder.split(params, spec["split"], _labeller(names))
    classes = class_embeddings(
        lambda prompts: embedder.texts(params, prompts),
        names,
        list(spec.get("templates", DEFAULT_TEMPLATES)),
    )
    logits = zero_shot_logits(zimg, classes, float(np.exp(np.asarray(params["t"])[0])))
    if out is not None:
        np.savez(out, logits=logits, labels=labels, class_names=np.asarray(names))
    return zero_shot_metrics(logits, labels)


def linear_probe(embedder: TwoTowerEmbedder, params, spec: Mapping[str, Any], out: Path | None):
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


def retrieval(embedder: TwoTowerEmbedder, params, spec: Mapping[str, Any], out: Path | None):
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

    if config.model.kind == "classifier":
        raise ValueError("In-training evals exist for two_towers models; remove config.evals.")
    for name, spec in specs.items():
        if spec.get("kind") not in EVAL_KINDS:
            raise ValueError(
                f"evals.{name}.kind must be one of {EVAL_KINDS}, got {spec.get('kind')!r}."
            )
    state: dict[str, Any] = {}
    out_dir = Path(workdir) / "evals"

    def evaluate(params, step: int) -> dict[str, float]:
        if "embedder" not in state:  # built lazily: the mesh exists once training started
            state["embedder"] = TwoTowerEmbedder(
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


RUNNERS = {"zeroshot": zero_shot, "retrieval": retrieval, "linear_probe": linear_probe}
