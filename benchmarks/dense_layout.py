"""Dense layers on [B, T, C] activations: one 2-D product vs flax's default, timed in turn.

  python benchmarks/dense_layout.py [--rounds 4]                 one layer's forward + backward
  python benchmarks/dense_layout.py --step "ViT w192" --rounds 3 whole vs_open_clip.py steps

The towers compute every dense layer through towers.common.token_flat_dot_general ([B*T, C] x
[C, F]); flax's default lax.dot_general contracts [B, T, C] directly, and XLA:CPU then copies
the [B, T, F] output gradient transposed before the kernel-gradient product. The layer part
times jax.vjp of both forms at the MLP shapes of the two vs_open_clip.py setups; --step builds
that script's hetclip step twice (towers with the flat product, and with lax.dot_general put
back) and times the two compiled steps in turn, best step of each. Speed-ups are the default
form's time over the flat form's.
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

# name: (batch, tokens, input features, output features)
LAYERS = {
    "ViT w192 p8 @ 64 px, batch 256: MLP Dense_0": (256, 65, 192, 768),
    "ViT-S/16 @ 224 px, batch 64: MLP Dense_0": (64, 197, 384, 1536),
    "ViT-S/16 @ 224 px, batch 64: MLP Dense_1": (64, 197, 1536, 384),
}


def layers(rounds: int) -> None:
    import jax

    from towers.common import token_flat_dot_general

    dims = (((2,), (0,)), ((), ()))
    for name, (batch, tokens, features_in, features_out) in LAYERS.items():
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(keys[0], (batch, tokens, features_in))
        kernel = jax.random.normal(keys[1], (features_in, features_out)) * features_in**-0.5
        grad_out = jax.random.normal(keys[2], (batch, tokens, features_out))
        calls = {}
        for form, dot_general in [("lax", jax.lax.dot_general), ("flat", token_flat_dot_general)]:

            def forward_backward(x, kernel, grad_out, dot_general=dot_general):
                _, vjp = jax.vjp(lambda a, b: dot_general(a, b, dims), x, kernel)
                return vjp(grad_out)

            step = jax.jit(forward_backward).lower(x, kernel, grad_out).compile()
            jax.block_until_ready(step(x, kernel, grad_out))
            args = (x, kernel, grad_out)
            calls[form] = lambda step=step, args=args: jax.block_until_ready(step(*args))
        best = step_ab.best_in_turn(calls, rounds, 5)
        flops = 6.0 * batch * tokens * features_in * features_out
        rate = flops / best["flat"] / 1e9
        print(
            f"{name}: lax {best['lax'] * 1e3:.1f} ms, flat {best['flat'] * 1e3:.1f} ms "
            f"({rate:.0f} GFLOP/s), speed-up {best['lax'] / best['flat']:.2f}",
            flush=True,
        )


def steps(only: str, rounds: int) -> None:
    import jax

    import towers.common

    name, best = step_ab.compare_steps(
        only,
        rounds,
        towers.common,
        "token_flat_dot_general",
        {"lax": jax.lax.dot_general, "flat": towers.common.token_flat_dot_general},
    )
    step_ab.report(name, best, "lax", "flat")


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    step_ab.main(__doc__, layers, steps, rounds=4)
