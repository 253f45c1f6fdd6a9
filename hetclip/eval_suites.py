"""`hetclip eval`: evaluate a checkpoint on a suite and write CLIP_benchmark-style results.

A checkpoint is a training work directory (its config.json and latest orbax checkpoint), an
orbax checkpoints folder, or a big_vision-layout .npz (with --config naming the model). Each
(dataset, task) gives one JSON file in CLIP_benchmark's schema,
  {"dataset", "model", "pretrained", "task", "metrics": {...}, "language"},
with its metric names (acc1, acc5, mean_per_class_recall, image_retrieval_recall@k,
text_retrieval_recall@k) plus ours (ece, nll), and results.md / results.csv gather them all.

Suites (dataset name -> task):
  imagetext   the embedded set: zero-shot on held-out categories and on the test split's
              categories (with OOD detection of the held-out images), retrieval on the test
              split, a ridge linear probe and 5-shot (fitted on train embeddings) on the test
              split
  supervised  a classifier (DET / HET / HET-XL head) on its data set's test split: accuracy,
              calibration, MC uncertainty (a distilled student: its Dirichlet's uncertainty)
  imagenet    zero-shot with the 1,000 cleaned class names x CLIP's 80 prompts on the TFDS
              sets you have built: imagenet2012 (validation), imagenet_v2 (test) and
              imagenet2012_real (validation, "any correct" multi-label scoring); missing sets
              are reported and skipped (--tfds-data-dir points at them)
  folder      zero-shot on an image folder (--folder ROOT, one sub-folder per class; the
              folder names are the class names)
HET-XL models add MC-averaged ("mc_") zero-shot metrics. Class embeddings are cached in
OUT/cache, so evaluating several data sets with the same classes encodes them once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

IMAGENET = {"kind": "zeroshot", "classes": "imagenet", "templates": "imagenet"}
SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "imagetext": {
        "imagetext_heldout": {"kind": "zeroshot", "split": "heldout"},
        "imagetext_test": {"kind": "zeroshot", "split": "test", "ood_split": "heldout"},
        "imagetext_test_retrieval": {"kind": "retrieval", "split": "test"},
        "imagetext_test_probe": {"kind": "linear_probe", "train_split": "train", "split": "test"},
    },
    "imagenet": {
        "imagenet1k": {
            **IMAGENET,
            "data": {"kind": "tfds", "name": "imagenet2012", "split": "validation"},
        },
        "imagenetv2": {
            **IMAGENET,
            "data": {"kind": "tfds", "name": "imagenet_v2", "split": "test"},
        },
        "imagenet1k_real": {
            **IMAGENET,
            "multilabel": True,
            "data": {
                "kind": "tfds",
                "name": "imagenet2012_real",
                "split": "validation",
                "label_key": "original_label",
                "multilabel_key": "real_label",
            },
        },
    },
    "folder": {},
    "supervised": {"test": {"kind": "classification", "split": "test"}},
}


def suite_specs(
    suite: str, *, tfds_data_dir: str | None = None, folder: str | None = None
) -> dict[str, dict[str, Any]]:
    """dataset name -> eval spec of `suite`, with the user's data locations filled in."""
    if suite not in SUITES:
        raise ValueError(f"Unknown suite {suite!r}; available: {sorted(SUITES)}.")
    if suite == "folder":
        if not folder:
            raise ValueError("The folder suite needs --folder ROOT (one sub-folder per class).")
        root = Path(folder).expanduser()
        data = {"kind": "folder", "root": str(root)}
        return {root.name: {"kind": "zeroshot", "data": data, "templates": "imagenet"}}
    specs = json.loads(json.dumps(SUITES[suite]))  # a deep copy
    for spec in specs.values():
        if tfds_data_dir and spec.get("data", {}).get("kind") == "tfds":
            spec["data"]["data_dir"] = str(tfds_data_dir)
    return specs


TASKS = {
    "classification": "classification",
    "zeroshot": "zeroshot_classification",
    "retrieval": "zeroshot_retrieval",
    "linear_probe": "linear_probe",
}


def load_model_params(checkpoint: str | Path, config) -> dict:
    """The params tree of `checkpoint` (work dir, orbax folder or .npz[:subtree])."""
    import jax

    from hetclip.models import build_model

    text = str(checkpoint)
    if ".npz" in text:
        from towers.checkpoints import load_params

        # Position embeddings make parameter shapes depend on the input size: take it from
        # a synthetic example through the config's eval preprocessing (no data set needed).
        inputs = example_inputs(config)
        model = build_model(config.model)
        reference = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), inputs)
        reference = reference["params"]
        return load_params(text, reference)
    from hetclip.train.checkpoint import read_checkpoint

    path = Path(text)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    return read_checkpoint(folder)["params"]


def example_inputs(config) -> dict:
    """{"image": [1, H, W, C]} (plus "text": [1, L] for two-tower models) shaped like the
    config's evaluation inputs: a blank image through the image ops of pp_eval, one prompt
    through pp_text."""
    import io

    import tensorflow as tf
    from PIL import Image

    from data_pipelines import ops

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256)).save(buffer, format="PNG")
    example = {"image": tf.constant(buffer.getvalue()), "_rng": tf.constant([0, 0], tf.int64)}
    image = ops.build(ops.image_part(config.input.pp_eval))(example)["image"]
    inputs = {"image": image.numpy()[None]}
    if config.model.kind == "two_towers":
        from hetclip.models import build_model
        from hetclip.train.embedder import Embedder

        inputs["text"] = Embedder(build_model(config.model), config, None).tokenize(["a"])
    return inputs


def config_for(checkpoint: str | Path, config_spec):
    """--config (a spec or a loaded ConfigDict) wins; otherwise the config.json a training run
    left in its work directory."""
    import ml_collections

    from hetclip.config import load_config

    if isinstance(config_spec, ml_collections.ConfigDict):
        return config_spec
    if config_spec:
        return load_config(config_spec)
    saved = Path(checkpoint) / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{checkpoint} has no config.json; pass --config naming the model (e.g. default.py)."
        )
    return ml_collections.ConfigDict(json.loads(saved.read_text()))


def run_suite(
    checkpoint: str | Path,
    suite: str,
    out_dir: str | Path,
    *,
    config_spec=None,
    model_name: str = "",
    tfds_data_dir: str | None = None,
    folder: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Evaluates, writes one JSON per (dataset, task) plus results.md / .csv; returns them.

    A TFDS data set that is not built is reported and skipped (the others still run); no
    result at all is an error."""
    specs = suite_specs(suite, tfds_data_dir=tfds_data_dir, folder=folder)
    from hetclip.models import build_model
    from hetclip.sharding import make_mesh
    from hetclip.train.evaluators import RUNNERS, Embedder

    config = config_for(checkpoint, config_spec)
    if suite == "supervised":
        if config.model.kind != "classifier":
            raise ValueError("The supervised suite evaluates classifiers; use imagetext here.")
        name = config.input.data.get("name") or "data"
        # A distilled student's logits are a Dirichlet's: report its uncertainty measures too.
        dirichlet = {"dirichlet": True} if config.get("distill") else {}
        specs = {f"{name}_{key}": {**spec, **dirichlet} for key, spec in specs.items()}
    elif config.model.kind != "two_towers":
        raise ValueError(
            f"The {suite} suite needs a two_towers (image-text) model; evaluate classifiers "
            "with --suite supervised."
        )
    params = load_model_params(checkpoint, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(
        build_model(config.model),
        config,
        make_mesh(dict(config.mesh)),
        class_cache=(out_dir / "cache", f"{Path(checkpoint).resolve()}:{_mtime(checkpoint)}"),
    )
    results, missing = [], []
    for dataset, spec in specs.items():
        run = RUNNERS[spec["kind"]]
        log(f"[eval] {dataset} ({TASKS[spec['kind']]})")
        try:
            metrics = run(embedder, params, spec, out_dir / f"{dataset}_outputs.npz")
        except FileNotFoundError as e:
            if spec.get("data", {}).get("kind") != "tfds":
                raise
            log(f"[eval] skipped {dataset}: {e}")
            missing.append(dataset)
            continue
        result = {
            "dataset": dataset,
            "model": model_name or config.model.kind,
            "pretrained": str(checkpoint),
            "task": TASKS[spec["kind"]],
            "metrics": {k: float(v) for k, v in metrics.items()},
            "language": "en",
        }
        (out_dir / f"{dataset}_{result['task']}.json").write_text(json.dumps(result, indent=2))
        results.append(result)
        _reliability_png(out_dir / f"{dataset}_outputs.npz", out_dir, dataset, model_name)
    if not results:
        raise FileNotFoundError(
            f"None of the {suite} suite's data sets ({', '.join(missing)}) is available; build "
            "them with `tfds build NAME --data_dir DIR` and pass --tfds-data-dir DIR."
        )
    write_tables(results, out_dir)
    return results


def run_ensemble(
    checkpoints: list[str | Path],
    suite: str,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = print,
    **options,
) -> list[dict]:
    """Evaluates each checkpoint into OUT/member_i, then the ensemble (the average of the
    members' predictive distributions, with its total / data / knowledge uncertainty) of every
    single-label classification task into OUT; returns the ensemble's results."""
    import numpy as np

    from evals.zeroshot import predictive_metrics, softmax

    if len(checkpoints) < 2:
        raise ValueError("An ensemble needs at least two checkpoints.")
    out_dir = Path(out_dir)
    members = []
    for index, checkpoint in enumerate(checkpoints):
        log(f"[eval] ensemble member {index}: {checkpoint}")
        members.append(
            run_suite(checkpoint, suite, out_dir / f"member_{index}", log=log, **options)
        )
    results = []
    for result in members[0]:
        dataset = result["dataset"]
        outputs = [
            np.load(out_dir / f"member_{i}" / f"{dataset}_outputs.npz") for i in range(len(members))
        ]
        if not all("logits" in o or "probs" in o for o in outputs):
            continue  # retrieval and probes have no predictive distribution
        labels = outputs[0]["labels"]
        if labels.ndim != 1:
            continue  # multi-label sets
        for i, o in enumerate(outputs[1:], 1):
            if not np.array_equal(o["labels"], labels):
                raise ValueError(
                    f"Ensemble member {i} saw other {dataset} examples than member 0; "
                    "evaluate every member on the same data."
                )
        probs = (softmax(o["logits"]) if "logits" in o else o["probs"] for o in outputs)
        ensemble = {
            **result,
            "model": f"ensemble of {len(members)}",
            "pretrained": ";".join(str(c) for c in checkpoints),
            "metrics": {k: float(v) for k, v in predictive_metrics(probs, labels).items()},
        }
        (out_dir / f"{dataset}_{result['task']}.json").write_text(json.dumps(ensemble, indent=2))
        results.append(ensemble)
    if not results:
        raise ValueError(f"The {suite} suite has no single-label classification task to ensemble.")
    write_tables(results, out_dir)
    return results


def _reliability_png(outputs: Path, out_dir: Path, dataset: str, model_name: str) -> None:
    """OUT/DATASET_reliability.png for single-label predictions (zero-shot logits or a
    classifier's softmax locs); multi-label, retrieval and probe outputs have none."""
    import numpy as np

    from evals.plots import reliability_diagram
    from evals.zeroshot import softmax

    if not outputs.is_file():
        return
    saved = np.load(outputs)
    labels = saved["labels"] if "labels" in saved else None
    if labels is None or labels.ndim != 1:
        return
    if "logits" in saved:  # zero-shot
        probs = softmax(saved["logits"])
    elif "probs" in saved and str(saved["form"]) == "softmax":  # a softmax classifier
        probs = saved["probs"]
    else:
        return
    reliability_diagram(
        probs,
        labels,
        out_dir / f"{dataset}_reliability.png",
        title=f"{model_name or 'model'}: {dataset}",
    )


def _mtime(checkpoint: str | Path) -> int:
    """Changes when the checkpoint is rewritten, so cached class embeddings go stale with it."""
    path = Path(str(checkpoint).split(":")[0])
    if path.is_dir() and (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    return path.stat().st_mtime_ns if path.exists() else 0


def write_tables(results: list[dict], out_dir: Path) -> None:
    keys = sorted({k for r in results for k in r["metrics"]})
    with (out_dir / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "task", *keys])
        for r in results:
            writer.writerow([r["dataset"], r["task"], *(r["metrics"].get(k, "") for k in keys)])
    lines = ["| dataset | task | metric | value |", "| --- | --- | --- | ---: |"]
    for r in results:
        for key, value in r["metrics"].items():
            lines.append(f"| {r['dataset']} | {r['task']} | {key} | {value:.4f} |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
