"""Ensemble distribution distillation: train a Dirichlet student on frozen teachers' outputs.

A config with a `distill` section trains its classifier (a DET head: its logits z are the
student Dirichlet's log-concentrations, alpha = exp(z) + 1) against teachers that are finished
`hetclip train` runs of one classifier config:

  distill.teachers       workdirs of the teacher runs (their config.json and checkpoints/)
  distill.loss           "pd_end2" (reverse KL to the Proxy Dirichlet, Ryabinin et al. 2021),
                         "end2" (Dirichlet likelihood of the members) or "end" (the mean only)
  distill.members        "teachers" (each teacher one member: an ensemble) or "samples" (one
                         HET / HET-XL teacher, each of its MC samples a member)
  distill.num_samples    MC samples of a HET / HET-XL teacher's prediction (default: its own)
  distill.estimator      the proxy precision from "mkl" (the paper's) or "epkl"
  distill.max_precision  optional cap on the proxy precision

The teachers' parameters are stacked [M, ...] under params["teachers"], frozen, and evaluated
one member at a time inside the step (hetclip/losses/ensemble_targets.py), so the student sees
fresh teacher outputs of each augmented batch, as in the paper. The student's own parameters
keep a classifier's names (img, head). Sampled members are the latent noise's spread, which is
aleatoric: a student distilled from them predicts that spread, not model disagreement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hetclip.losses import dirichlet, ensemble_targets
from hetclip.train.objectives import Objective, model_encoder

LOSSES = ("pd_end2", "end2", "end")
MEMBERS = ("teachers", "samples")
TEACHERS = "teachers"  # the params subtree that holds the stacked teachers
_TINY = 1e-30  # floor of a teacher's MC-averaged probability before its log


def teacher_config(teacher_dirs: list[str]) -> ml_collections.ConfigDict:
    """The `model` section every teacher run was trained with (they must agree to stack)."""
    if not teacher_dirs:
        raise ValueError("distill.teachers is empty: name the workdirs of the teacher runs.")
    models = []
    for workdir in teacher_dirs:
        path = Path(workdir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"distill.teachers: {workdir!r} has no config.json; name the workdir of a "
                "finished `hetclip train` run."
            )
        models.append(json.loads(path.read_text())["model"])
    for workdir, model in zip(teacher_dirs[1:], models[1:], strict=True):
        if model != models[0]:
            raise ValueError(
                f"distill.teachers: {workdir!r} was trained with another model section than "
                f"{teacher_dirs[0]!r}; teachers are stacked, so they must share one model config."
            )
    if models[0].get("kind") != "classifier":
        raise ValueError("distill.teachers must be supervised classifier runs (model.kind).")
    return ml_collections.ConfigDict(models[0])


def check_distill_config(distill: Mapping[str, Any], student_model: Mapping[str, Any]) -> None:
    """Errors that name the bad key, before anything is built."""
    if distill.get("loss", "pd_end2") not in LOSSES:
        raise ValueError(f"distill.loss must be one of {LOSSES}, got {distill.get('loss')!r}.")
    members = distill.get("members", TEACHERS)
    if members not in MEMBERS:
        raise ValueError(f"distill.members must be one of {MEMBERS}, got {members!r}.")
    if student_model.get("kind") != "classifier" or student_model["head"].get("kind") != "det":
        raise ValueError(
            "A distilled student is a classifier with a DET head (model.head.kind='det'): its "
            "logits are the Dirichlet's log-concentrations."
        )
    if members == "samples" and len(distill["teachers"]) != 1:
        raise ValueError("distill.members='samples' distils ONE HET / HET-XL teacher's samples.")


def add_teachers(
    params: dict, shardings: dict, distill: Mapping[str, Any], mesh: Mesh, example_batch: dict
):
    """(params, shardings) with the teachers' latest checkpoints stacked under "teachers":
    each leaf [M, ...], sharded as the teacher model's own parameters are, members unsharded."""
    from hetclip.models import build_model
    from hetclip.train.checkpoint import read_checkpoint
    from hetclip.train.step import model_param_shardings

    teacher_dirs = list(distill["teachers"])
    model = build_model(teacher_config(teacher_dirs))
    own = model_param_shardings(model, example_batch, mesh)
    loaded = [read_checkpoint(Path(d) / "checkpoints")["params"] for d in teacher_dirs]
    for workdir, tree in zip(teacher_dirs, loaded, strict=True):
        if jax.tree.structure(tree) != jax.tree.structure(own):
            raise ValueError(
                f"distill.teachers: {workdir!r}'s checkpoint does not hold the parameters of "
                "its config.json's model."
            )
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *loaded)
    teacher_shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, PartitionSpec(None, *s.spec)), own
    )
    params = {**params, TEACHERS: jax.device_put(stacked, teacher_shardings)}
    return params, {**shardings, TEACHERS: teacher_shardings}


def _member_logits(model: nn.Module, distill: Mapping[str, Any]):
    """(teacher params, batch, key) -> logits [B, K] (or [S, B, K] for sampled members): a DET
    teacher's logits, a HET / HET-XL teacher's log MC-averaged probabilities."""
    head = model.head.clone(parent=None, name=None)
    num_samples = distill.get("num_samples")
    if head.form != "softmax":
        raise ValueError("distill: teachers must have softmax heads (model.head.form).")
    if distill.get("members", TEACHERS) == "samples" and not head.stochastic:
        raise ValueError("distill.members='samples' needs a HET / HET-XL teacher head.")

    def logits(params, batch, key):
        inputs = {"image": batch["image"]}
        phi = model.apply({"params": params}, inputs, train=False)["phi"]
        variables = {"params": params["head"]}
        if distill.get("members", TEACHERS) == "samples":
            probs = head.apply(
                variables, phi, mode="sample_probs", num_samples=num_samples, key=key
            )
            return jnp.log(jnp.maximum(jnp.moveaxis(probs, 1, 0), _TINY))  # [S, B, K]
        if not head.stochastic:
            return head.apply(variables, phi, mode="locs")
        probs = head.apply(variables, phi, mode="probs", num_samples=num_samples, key=key)
        return jnp.log(jnp.maximum(probs, _TINY))

    return logits


def distill_objective(
    student: nn.Module, teacher: nn.Module, distill: Mapping[str, Any]
) -> Objective:
    """encode: the student's phi plus the teachers' statistics of each example (no gradient);
    loss: the batch mean of distill.loss on the student's DET logits
    (hetclip/losses/dirichlet.py)."""
    kind = distill.get("loss", "pd_end2")
    estimator = distill.get("estimator", "mkl")
    max_precision = distill.get("max_precision")
    member_logits = _member_logits(teacher, distill)
    student_encode = model_encoder(student)
    head = student.head.clone(parent=None, name=None)

    def encode(params, batch, dropout_key, train: bool = True):
        own = {k: v for k, v in params.items() if k != TEACHERS}
        reps = student_encode(own, batch, dropout_key, train)
        teachers = jax.lax.stop_gradient(params[TEACHERS])
        if distill.get("members", TEACHERS) == "samples":
            one = jax.tree.map(lambda leaf: leaf[0], teachers)
            samples = member_logits(one, batch, dropout_key)
            stats = ensemble_targets.scan_members(lambda logits: logits, samples)
        else:
            stats = ensemble_targets.scan_members(
                lambda member: member_logits(member, batch, dropout_key), teachers
            )
        target = ensemble_targets.proxy_target(stats, estimator, max_precision=max_precision)
        reps["teacher_mean_probs"] = target.mean_probs
        reps["teacher_mean_log_probs"] = stats.mean_log_probs()
        reps["teacher_precision"] = target.precision
        return reps

    def loss(params, reps, batch, noise_key):
        del batch, noise_key
        logits = head.apply({"params": params["head"]}, reps["phi"], mode="locs")
        target = ensemble_targets.ProxyTarget(reps["teacher_mean_probs"], reps["teacher_precision"])
        if kind == "pd_end2":
            per_example = dirichlet.proxy_dirichlet_loss(logits, target)
        elif kind == "end2":
            per_example = dirichlet.end2_loss(logits, reps["teacher_mean_log_probs"])
        else:
            per_example = dirichlet.end_loss(logits, target.mean_probs)
        alpha0 = dirichlet.concentrations(logits).sum(-1)
        metrics = {
            "teacher_precision": jnp.mean(target.precision),
            "student_precision": jnp.mean(alpha0 - logits.shape[-1]),
        }
        return per_example.mean(), metrics

    return Objective(encode, loss)


def objective_from_config(student: nn.Module, distill: Mapping[str, Any]) -> Objective:
    """distill_objective with the teacher model built from the teacher runs' config."""
    from hetclip.models import build_model

    teacher = build_model(teacher_config(list(distill["teachers"])))
    return distill_objective(student, teacher, distill)
