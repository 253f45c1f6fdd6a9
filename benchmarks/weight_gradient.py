"""A dense layer's weight gradient x^T dy: XLA's product vs the compiled kernel
(towers/cpu_dense.cc), timed in turn, as a fraction of the float32 matmul peak of the same run.

  python benchmarks/weight_gradient.py [--rounds 5]                   the products alone
  python benchmarks/weight_gradient.py --step "ViT w192" --rounds 4   whole vs_open_clip.py steps

The product part times x [M, K]^T dy [M, F] at every dense layer's shape of the two
vs_open_clip.py CPU setups (q / k / v / out, MLP in, MLP out; image and text towers), XLA's
jnp.dot against towers.cpu_dense.weight_gradient, with the 2048^3 float32 product measured
before each shape (fractions are of the highest measurement so far). --step builds that
script's hetclip step with the kernel off (towers.cpu_dense.supports always False: XLA's
product) and on, and times the compiled steps in turn (best step of each). Speed-ups are
XLA's time over the kernel's.
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

# name: (M, K, F) of x [M, K] and dy [M, F]
SHAPES = {
    "ViT w192 p8 @ 64 px, batch 256: q / k / v / out": (256 * 65, 192, 192),
    "ViT w192: MLP in": (256 * 65, 192, 768),
    "ViT w192: MLP out": (256 * 65, 768, 192),
    "text w256 ctx 32, batch 256: q / k / v / out": (256 * 32, 256, 256),
    "text w256: MLP in": (256 * 32, 256, 1024),
    "text w256: MLP out": (256 * 32, 1024, 256),
    "ViT-S/16 @ 224 px, batch 64: q / k / v / out": (64 * 197, 384, 384),
    "ViT-S/16: MLP in": (64 * 197, 384, 1536),
    "ViT-S/16: MLP out": (64 * 197, 1536, 384),
}


def products(rounds: int) -> None:
    import jax

    from towers import cpu_dense

    train_step = step_ab.load("train_step")
    peak = 0.0
    for name, (rows, depth, features) in SHAPES.items():
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        x = jax.random.normal(keys[0], (rows, depth))
        grad = jax.random.normal(keys[1], (rows, features))
        calls = {}
        for form, fn in [("xla", lambda x, g: x.T @ g), ("kernel", cpu_dense.weight_gradient)]:
            compiled = jax.jit(fn).lower(x, grad).compile()
            jax.block_until_ready(compiled(x, grad))
            calls[form] = lambda c=compiled, a=(x, grad): jax.block_until_ready(c(*a))
        peak = max(peak, train_step.measured_peak(False)[0] * 1e9)  # FLOP/s
        best = step_ab.best_in_turn(calls, rounds, 5)
        flops = 2 * rows * depth * features
        fractions = {form: flops / seconds / peak for form, seconds in best.items()}
        print(
            f"{name} [{rows}, {depth}]^T x [{rows}, {features}]: XLA {best['xla'] * 1e3:.2f} ms "
            f"({fractions['xla']:.2f} of peak), kernel {best['kernel'] * 1e3:.2f} ms "
            f"({fractions['kernel']:.2f}), {best['xla'] / best['kernel']:.3f}x "
            f"(peak so far {peak / 1e9:.0f} GFLOP/s)",
            flush=True,
        )


def steps(only: str, rounds: int) -> None:
    from towers import cpu_dense

    variants = {"xla": lambda *args: False, "kernel": cpu_dense.supports}
    name, best = step_ab.compare_steps(only, rounds, cpu_dense, "supports", variants)
    step_ab.report(name, best, "xla", "kernel")


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    step_ab.main(__doc__, products, steps, rounds=5)
