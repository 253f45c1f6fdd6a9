"""`hetclip eval`: evaluate a checkpoint on a suite and write CLIP_benchmark-style results.

A checkpoint is a training work directory (its config.json and latest orbax checkpoint), an
orbax checkpoints folder, or a big_vision-layout .npz (with --config naming the model). Each
(dataset, task) gives one JSON file in CLIP_benchmark's schema,
  {"dataset", "model", "pretrained", "task", "metrics": {...}, "language"},
with its metric names (acc1, acc5, mean_per_class_recall, image_retrieval_recall@k,
text_retrieval_recall@k) plus ours (ece, nll), and results.md / results.csv gather them all.

Suites (dataset name -> task):
  imagetext   the embedded set: zero-shot on held-out categories and on the test split's
              categories, retrieval on the test split, a ridge linear probe and 5-shot
              (fitted on train embeddings) scored on the test split
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "imagetext": {
        "imagetext_heldout": {"kind": "zeroshot", "split": "heldout"},
        "imagetext_test": {"kind": "zeroshot", "split": "test"},
        "imagetext_test_retrieval": {"kind": "retrieval", "split": "test"},
        "imagetext_test_probe": {"kind": "linear_probe", "train_split": "train", "split": "test"},
    },
}
TASKS = {
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
        from data_pipelines.input import pipeline_from_config
        from towers.checkpoints import load_params

        # Position embeddings make parameter shapes depend on the input size: take it from
        # one example of the eval pipeline.
        pipeline = pipeline_from_config(config.input, pp_key="pp_eval", seed=0)
        example = next(pipeline.eval_batches())
        inputs = {k: example[k][:1] for k in ("image", "text") if k in example}
        model = build_model(config.model)
        reference = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), inputs)
        reference = reference["params"]
        return load_params(text, reference)
    from hetclip.train.checkpoint import read_checkpoint

    path = Path(text)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    return read_checkpoint(folder)["params"]


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
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Evaluates, writes one JSON per (dataset, task) plus results.md / .csv; returns them."""
    if suite not in SUITES:
        raise ValueError(f"Unknown suite {suite!r}; available: {sorted(SUITES)}.")
    from hetclip.models import build_model
    from hetclip.sharding import make_mesh
    from hetclip.train.evaluators import RUNNERS, TwoTowerEmbedder

    config = config_for(checkpoint, config_spec)
    if config.model.kind != "two_towers":
        raise ValueError("Zero-shot and retrieval suites need a two_towers (image-text) model.")
    params = load_model_params(checkpoint, config)
    embedder = TwoTowerEmbedder(build_model(config.model), config, make_mesh(dict(config.mesh)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for dataset, spec in SUITES[suite].items():
        run = RUNNERS[spec["kind"]]
        log(f"[eval] {dataset} ({TASKS[spec['kind']]})")
        metrics = run(embedder, params, spec, out_dir / f"{dataset}_outputs.npz")
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
    write_tables(results, out_dir)
    return results


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
