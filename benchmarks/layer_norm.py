"""LayerNorm forward + backward: flax's (XLA's ops) vs the compiled kernels
(towers/cpu_layer_norm.cc), timed in turn.

  python benchmarks/layer_norm.py [--rounds 10]                    the layers alone
  python benchmarks/layer_norm.py --step "ViT w192" --rounds 4     whole vs_open_clip.py steps

The layer part times towers.common's LayerNorm (value and gradients of a weighted sum of its
output) at the activations of the two vs_open_clip.py CPU setups, with the kernels off
(towers.cpu_layer_norm.supports always False: flax's LayerNorm) and on, and reports the bytes
one pass over the activations moves per second as well. --step builds that script's hetclip
step both ways and times the compiled steps in turn (best step of each). Speed-ups are flax's
time over the kernels'.
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
_spec = importlib.util.spec_from_file_location("step_ab", os.path.join(HERE, "step_ab.py"))
step_ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_ab)

# name: [B, T, D] of the activations
SHAPES = {
    "ViT w192 p8 @ 64 px, batch 256": (256, 65, 192),
    "text w256 ctx 32, batch 256": (256, 32, 256),
    "ViT-S/16 @ 224 px, batch 64": (64, 197, 384),
}


def _variants():
    from towers import cpu_layer_norm

    return {"flax": lambda *args: False, "kernel": cpu_layer_norm.supports}


def _layer_times(shape: tuple[int, ...], rounds: int) -> dict:
    """{variant: best seconds} of a LayerNorm's value and gradients at activations `shape`."""
    import jax
    import jax.numpy as jnp

    from towers import common, cpu_layer_norm

    x, weights = jax.random.normal(jax.random.PRNGKey(0), (2, *shape))
    module = common.layer_norm(jnp.float32, jnp.float32)
    params = module.init(jax.random.PRNGKey(1), x)
    calls = {}
    for variant, supports in _variants().items():
        cpu_layer_norm.supports, original = supports, cpu_layer_norm.supports
        try:  # a fresh function per variant: jit would reuse a trace of the same one
            step = jax.jit(
                jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * weights), argnums=(0, 1))
            )
            compiled = step.lower(params, x).compile()
        finally:
            cpu_layer_norm.supports = original
        jax.block_until_ready(compiled(params, x))
        calls[variant] = lambda c=compiled: jax.block_until_ready(c(params, x))
    return step_ab.best_in_turn(calls, rounds, 3)


def layers(rounds: int) -> None:
    for name, shape in SHAPES.items():
        best = _layer_times(shape, rounds)
        megabytes = 4 * shape[0] * shape[1] * shape[2] / 1e6
        print(
            f"LayerNorm forward + backward {list(shape)} ({name}): flax "
            f"{best['flax'] * 1e3:.2f} ms, kernel {best['kernel'] * 1e3:.2f} ms, "
            f"{best['flax'] / best['kernel']:.3f}x (one pass over x: {megabytes:.1f} MB)",
            flush=True,
        )


def steps(only: str, rounds: int) -> None:
    from towers import cpu_layer_norm

    name, best = step_ab.compare_steps(only, rounds, cpu_layer_norm, "supports", _variants())
    step_ab.report(name, best, "flax", "kernel")


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    step_ab.main(__doc__, layers, steps, rounds=10)
