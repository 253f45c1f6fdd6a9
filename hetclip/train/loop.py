"""`hetclip train`: build everything a config names, then run the step loop.

Each piece is its own small function (mesh, input, model, optimiser, state, loop); train()
only wires them. Resuming: if workdir/checkpoints has a checkpoint, training continues from it
with the same data and random numbers an uninterrupted run would have used.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hetclip.sharding import BATCH_AXES, global_batch, make_mesh
from hetclip.train import distill, optim
from hetclip.train.checkpoint import Checkpointer, StopRequest
from hetclip.train.metrics import MetricsWriter, status_line, training_progress
from hetclip.train.objectives import make_objective
from hetclip.train.step import NONFINITE_POLICIES, init_params, init_state, make_train_step

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Raised when a step's loss or gradient is not finite and train.on_nonfinite is 'stop'."""


class Stopped(Exception):
    """Raised after a SIGTERM / SIGINT was honoured: the state is saved, the run can resume."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} at step {step}; rerun to resume")
        self.signum, self.step = signum, step


def load_pretrained(params: dict, init_from: Mapping[str, str]) -> dict:
    """Replaces subtrees of `params`: {"txt": "minilm"} or {"img": "file.npz:img"}."""
    params = dict(params)
    for subtree, spec in init_from.items():
        if subtree not in params:
            raise ValueError(
                f"init_from names {subtree!r}, not a parameter subtree of the model "
                f"({sorted(params)})."
            )
        if spec == "minilm":
            from towers.bert import load_minilm

            loaded = load_minilm()[1]["params"]
        else:
            from towers.checkpoints import load_params

            loaded = load_params(spec, params[subtree])
        shardings = jax.tree.map(lambda x: x.sharding, params[subtree])
        loaded = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), loaded, params[subtree])
        params[subtree] = jax.device_put(loaded, shardings)
    return params


def _check(config: Mapping[str, Any]) -> None:
    policy = config["train"].get("on_nonfinite", "skip")
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"train.on_nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}.")
    if int(config["total_steps"]) < 1:
        raise ValueError(f"total_steps must be at least 1, got {config['total_steps']}.")


def _check_batch(config, mesh) -> None:
    shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names]))
    accum = int(config.train.get("accum_steps", 1))
    batch = int(config.input.batch_size)
    if batch % (shards * accum):
        raise ValueError(
            f"input.batch_size={batch} must be a multiple of the {shards} data shards of the mesh "
            f"times train.accum_steps={accum} (micro-batches per step) = {shards * accum}."
        )


def _host_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(config, workdir: str | Path, *, evaluate=None) -> dict[str, float]:
    """Trains `config` in `workdir` (created; resumed when it holds checkpoints).

    evaluate: optional callable(params, step) -> {name: value} run every config.eval_every
    steps and at the end (hetclip.train.evaluators builds it from config.evals).
    Returns the last logged metrics."""
    from data_pipelines.input import pipeline_from_config
    from hetclip.models import build_model

    _check(config)
    if config.get("distill"):
        distill.check_distill_config(config.distill, config.model)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        (workdir / "config.json").write_text(config.to_json(indent=2))
    total_steps, seed = int(config.total_steps), int(config.seed)
    mesh = make_mesh(dict(config.mesh))
    _check_batch(config, mesh)
    pipeline = pipeline_from_config(config.input, seed=seed)
    model = build_model(config.model)
    example = {k: v[:1] for k, v in next(pipeline.batches(0)).items()}
    params, param_shardings = init_params(model, example, seed, mesh)
    params = load_pretrained(params, dict(config.get("init_from", {})))
    freeze = list(config.get("freeze", []))
    if config.get("distill"):  # frozen teachers stacked beside the student's parameters
        params, param_shardings = distill.add_teachers(
            params, param_shardings, config.distill, mesh, example
        )
        freeze.append(f"{distill.TEACHERS}/.*")
    lr = optim.schedule(config.schedule, total_steps)
    tx = optim.optimizer(config.optim, lr, params, freeze)
    state, shardings = init_state(tx, params, param_shardings, mesh)
    checkpoints = Checkpointer(
        workdir / "checkpoints",
        keep=int(config.checkpoint.keep),
        every=int(config.checkpoint.every),
    )
    start = checkpoints.latest_step() or 0
    if start:
        state = checkpoints.restore(start, state, shardings)
        log.info("resumed from step %d in %s", start, workdir)
    objective = (
        distill.objective_from_config(model, config.distill)
        if config.get("distill")
        else make_objective(model, config, mesh)
    )
    step_fn = make_train_step(
        objective,
        tx,
        lr,
        seed=seed,
        mesh=mesh,
        shardings=shardings,
        freeze=freeze,
        accum_steps=int(config.train.get("accum_steps", 1)),
    )
    writer = MetricsWriter(workdir, resume_step=start, enabled=is_main)
    try:
        return _loop(config, state, step_fn, pipeline, mesh, checkpoints, writer, start, evaluate)
    finally:
        writer.close()
        checkpoints.close()


def _loop(config, state, step_fn, pipeline, mesh, checkpoints, writer, start, evaluate):
    total_steps, log_every = int(config.total_steps), int(config.log_every)
    eval_every = int(config.get("eval_every", 0))
    policy = config.train.get("on_nonfinite", "skip")
    progress = training_progress(total_steps, start) if jax.process_index() == 0 else None
    batches = pipeline.batches(start)
    # Inputs ready before each call: then XLA:CPU, with asynchronous dispatch off
    # (hetclip/allocator.py), runs a step inline and frees its temporaries before returning;
    # else they are freed after the next step may have allocated its own. The state needs it
    # once: reading each step's `finite` flag below waits for the state it returns as well.
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    if on_cpu:
        jax.block_until_ready(state)
    last: dict[str, float] = {}
    tick, ticked_step = time.monotonic(), start
    with StopRequest() as stop:
        for step in range(start + 1, total_steps + 1):
            batch = global_batch(next(batches), mesh, BATCH_AXES)
            if on_cpu:
                jax.block_until_ready(batch)
            state, metrics = step_fn(state, batch)
            if not float(metrics["finite"]):
                message = (
                    f"step {step}: loss or gradient is not finite "
                    f"(loss {float(metrics['loss'])}); the update was not applied"
                )
                if policy == "stop":
                    checkpoints.save(step - 1, _rewind(state))
                    raise NonFiniteError(message + "; stopping (train.on_nonfinite='stop').")
                log.warning("%s; skipping it (train.on_nonfinite='skip').", message)
            record: dict[str, float] = {}
            if step % log_every == 0 or step == total_steps:
                record = last = {"step": step, **_host_metrics(metrics)}
                now = time.monotonic()
                last["examples_per_s"] = (
                    (step - ticked_step) * pipeline.global_batch_size / max(now - tick, 1e-9)
                )
                tick, ticked_step = now, step
            if (
                evaluate is not None
                and eval_every
                and (step % eval_every == 0 or step == total_steps)
            ):
                record = {**record, **evaluate(state["params"], step)}
                last.update(record)
                tick = time.monotonic()  # evaluation time is not training throughput
            if record:
                writer.write(step, {k: v for k, v in record.items() if k != "step"})
            if progress is not None:
                progress.update(1, status_line(last) if last else None)
            if checkpoints.due(step) or step == total_steps or stop:
                checkpoints.save(step, state)
            if stop:
                raise Stopped(stop.signal, step)
    if progress is not None:
        progress.close()
    return {k: v for k, v in last.items() if k != "step"}


def _rewind(state: dict) -> dict:
    """The state before a skipped (non-finite) step: only the counter moved."""
    return {**state, "step": state["step"] - 1}


def write_summary(workdir: str | Path, metrics: Mapping[str, float]) -> Path:
    path = Path(workdir) / "final_metrics.json"
    path.write_text(json.dumps(dict(metrics), indent=2))
    return path
