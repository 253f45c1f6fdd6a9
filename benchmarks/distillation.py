"""Ensemble distribution distillation on the embedded Fashion-MNIST set: M DET teachers (seeds
0..M-1), then one Dirichlet student per loss (PD-EnD2, EnD2, EnD), each evaluated on the test
split and on an out-of-distribution set.

  python benchmarks/distillation.py [--teachers 3] [--steps 300] [--workdir runs/distillation]
      [--ood imagetext:test] [--losses pd_end2,end2,end] [--out results.json]

Needs `hetclip data prepare --name fashion_mnist` (and `--name imagetext` for the default OOD
set: Tux Paint stamps, clip art and emoji, which no Fashion-MNIST class resembles). Runs resume:
finished teachers and students are not trained again.

Rows: each teacher, the ensemble (mean of the teachers' softmax; its uncertainty is the
decomposition over members, evals.uncertainty), and each student (softmax of its logits; its
uncertainty the closed form of Dir(exp(z) + 1)). Columns: test accuracy, NLL, ECE, Brier; mean
total and knowledge uncertainty on the test and OOD sets; OOD detection AUROC by total and by
knowledge uncertainty (OOD positive). Single teachers have no knowledge uncertainty.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

LOSSES = ("pd_end2", "end2", "end")


def train_runs(
    workdir: Path, teachers: int, steps: int, losses: tuple[str, ...] = LOSSES
) -> tuple[list[str], dict[str, str]]:
    """(teacher workdirs, {loss: student workdir}), trained where not finished yet."""
    from hetclip.config import apply_overrides, load_config
    from hetclip.train.loop import train

    teacher_dirs = []
    for seed in range(teachers):
        run = workdir / f"teacher_{seed}"
        config = load_config(f"fashion_mnist.py:head=det,steps={steps}")
        train(apply_overrides(config, [f"seed={seed}"]), run)
        teacher_dirs.append(str(run))
    students = {}
    for loss in losses:
        run = workdir / f"student_{loss}"
        spec = f"fashion_mnist_distill.py:teachers={teacher_dirs},loss='{loss}',steps={steps}"
        train(apply_overrides(load_config(spec), [f"seed={teachers}"]), run)
        students[loss] = str(run)
    return teacher_dirs, students


def logits_of(workdir: str, data: dict) -> tuple:
    """(logits [N, K], labels [N]) of a finished run's classifier over one labelled pass."""
    import jax
    import ml_collections
    import numpy as np

    from hetclip.models import build_model
    from hetclip.sharding import make_mesh
    from hetclip.train.checkpoint import read_checkpoint
    from hetclip.train.embedder import Embedder

    config = ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))
    model = build_model(config.model)
    params = read_checkpoint(Path(workdir) / "checkpoints")["params"]
    params = {k: v for k, v in params.items() if k != "teachers"}
    embedder = Embedder(model, config, make_mesh(dict(config.mesh)))
    out = embedder.collect(
        params,
        embedder.labelled_pipeline(data),
        ("image",),
        extra=lambda local: {"label": local["label"]},
    )
    head = model.head.clone(parent=None, name=None)
    locs = jax.jit(lambda phi: head.apply({"params": params["head"]}, phi, mode="locs"))
    return np.asarray(locs(out["phi"]), np.float64), out["label"].astype(np.int64)


def row(probs, labels, parts=None, ood_parts=None) -> dict:
    """Test metrics of probs [N, K] plus, given uncertainty measures in and out of
    distribution, their means and OOD AUROCs."""
    from evals.uncertainty import ood_auroc
    from evals.zeroshot import probs_metrics

    metrics = probs_metrics(probs, labels)
    result = {k: metrics[k] for k in ("acc1", "nll", "ece", "brier")}
    if parts is None:
        return result
    for name in ("total", "knowledge"):
        if name not in parts:
            continue
        result[f"{name}_in"] = float(parts[name].mean())
        result[f"{name}_ood"] = float(ood_parts[name].mean())
        result[f"ood_auroc_{name}"] = ood_auroc(parts[name], ood_parts[name])
    return result


def evaluate(teacher_dirs: list[str], students: dict[str, str], ood: dict) -> dict[str, dict]:
    import numpy as np

    from evals.uncertainty import dirichlet_uncertainty, entropy, uncertainty_decomposition
    from evals.zeroshot import softmax
    from hetclip.losses.dirichlet import MAX_LOG_CONCENTRATION

    test = {"kind": "prepared", "name": "fashion_mnist", "split": "test"}
    rows, member_probs, member_ood = {}, [], []
    for i, run in enumerate(teacher_dirs):
        logits, labels = logits_of(run, test)
        ood_logits, _ = logits_of(run, ood)
        probs, ood_probs = softmax(logits), softmax(ood_logits)
        member_probs.append(probs)
        member_ood.append(ood_probs)
        total = {"total": entropy(probs)}
        rows[f"teacher {i}"] = row(probs, labels, total, {"total": entropy(ood_probs)})
    parts = uncertainty_decomposition(member_probs)
    ood_parts = uncertainty_decomposition(member_ood)
    rows[f"ensemble of {len(teacher_dirs)}"] = row(parts["mean_probs"], labels, parts, ood_parts)
    for loss, run in students.items():
        logits, labels = logits_of(run, test)
        ood_logits, _ = logits_of(run, ood)
        alpha, ood_alpha = (
            np.exp(np.minimum(x, MAX_LOG_CONCENTRATION)) + 1 for x in (logits, ood_logits)
        )
        rows[f"student {loss}"] = row(
            softmax(logits), labels, dirichlet_uncertainty(alpha), dirichlet_uncertainty(ood_alpha)
        )
    return rows


def table(rows: dict[str, dict]) -> str:
    columns = [
        *("acc1", "nll", "ece", "brier", "total_in", "total_ood"),
        *("knowledge_in", "knowledge_ood", "ood_auroc_total", "ood_auroc_knowledge"),
    ]
    lines = ["| model | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, values in rows.items():
        cells = [f"{values[c]:.4f}" if c in values else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workdir", default="runs/distillation")
    parser.add_argument("--ood", default="imagetext:test", help="prepared set name:split")
    parser.add_argument("--losses", default=",".join(LOSSES), help="students to train")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "distillation.json"))
    args = parser.parse_args()
    from hetclip import allocator  # as the hetclip command runs

    allocator.reexec_with_allocator()
    name, _, split = args.ood.partition(":")
    ood = {"kind": "prepared", "name": name, "split": split or "test"}
    losses = tuple(x for x in args.losses.split(",") if x)
    teacher_dirs, students = train_runs(Path(args.workdir), args.teachers, args.steps, losses)
    rows = evaluate(teacher_dirs, students, ood)
    print(table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
