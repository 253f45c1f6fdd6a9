"""The train state, its shardings on a mesh, and the jitted training step.

State is a plain dict {"step": int32 [], "params": ..., "opt_state": ...}, so it checkpoints as
a tree. Every random number of a step comes from fold_in(PRNGKey(seed), step): a resumed run
draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hetclip.sharding import BATCH_AXES, DEFAULT_RULES, batch_sharding, param_shardings
from hetclip.train.accumulate import loss_and_grads
from hetclip.train.objectives import Objective
from hetclip.train.optim import frozen_mask

NONFINITE_POLICIES = ("skip", "stop")


def _initializer(model: nn.Module, example_batch: dict):
    inputs = {k: v for k, v in example_batch.items() if k in ("image", "text")}

    def init(key):
        return model.init({"params": key, "dropout": key}, inputs)["params"]

    return init


def model_param_shardings(model: nn.Module, example_batch: dict, mesh: Mesh, rules=DEFAULT_RULES):
    """The NamedShardings `model`'s parameters take on `mesh` (by their logical axis names),
    found without creating them."""
    boxed = jax.eval_shape(_initializer(model, example_batch), jax.random.PRNGKey(0))
    return param_shardings(boxed, mesh, rules)


def init_params(model: nn.Module, example_batch: dict, seed: int, mesh: Mesh, rules=DEFAULT_RULES):
    """(params placed on `mesh` by their logical axis names, their NamedShardings)."""
    init = _initializer(model, example_batch)
    shardings = model_param_shardings(model, example_batch, mesh, rules)
    params = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(
        jax.random.PRNGKey(seed)
    )
    return params, shardings


def init_state(tx: optax.GradientTransformation, params, param_shardings_tree, mesh: Mesh):
    """(state, its shardings). Optimiser moments take their parameters' shardings (XLA
    propagates them through tx.init); counters are replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = jax.jit(tx.init)(params)
    opt_shardings = jax.tree.map(
        # Leaves that depend on no parameter (step counters) come back on one device.
        lambda x: x.sharding if len(x.sharding.device_set) == mesh.size else replicated,
        opt_state,
    )
    opt_state = jax.device_put(opt_state, opt_shardings)
    shardings = {"step": replicated, "params": param_shardings_tree, "opt_state": opt_shardings}
    step = jax.device_put(jnp.zeros((), jnp.int32), replicated)
    return {"step": step, "params": params, "opt_state": opt_state}, shardings


def _where(keep_new: jax.Array, new, old):
    return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def make_train_step(
    objective: Objective,
    tx: optax.GradientTransformation,
    lr: optax.Schedule,
    *,
    seed: int,
    mesh: Mesh,
    shardings: dict,
    freeze: Sequence[str] = (),
    accum_steps: int = 1,
    batch_axes: Sequence[str] = BATCH_AXES,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """jit(step)(state, batch) -> (state, metrics); a non-finite loss or gradient leaves the
    parameters and optimiser state untouched and reports `finite` = 0 for the step."""
    num_shards = 1
    for axis in batch_axes:
        if axis in mesh.axis_names:
            num_shards *= mesh.shape[axis]
    base_key = jax.random.PRNGKey(seed)

    def step_fn(state, batch):
        params = state["params"]
        frozen = frozen_mask(params, freeze)
        # Frozen towers need no gradient: stop it so XLA drops their backward pass.
        trainable = jax.tree.map(lambda x, f: jax.lax.stop_gradient(x) if f else x, params, frozen)
        dropout_key, noise_key = jax.random.split(jax.random.fold_in(base_key, state["step"]))
        (loss, extra), grads = loss_and_grads(
            objective,
            trainable,
            batch,
            dropout_key,
            noise_key,
            accum_steps=accum_steps,
            num_shards=num_shards,
        )
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "param_norm": optax.global_norm(params),
            "learning_rate": lr(state["step"]),
            "finite": finite.astype(jnp.float32),
            **extra,
        }
        new_state = {
            "step": state["step"] + 1,
            "params": _where(finite, new_params, params),
            "opt_state": _where(finite, opt_state, state["opt_state"]),
        }
        return new_state, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        step_fn,
        in_shardings=(shardings, batch_sharding(mesh, batch_axes)),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )
