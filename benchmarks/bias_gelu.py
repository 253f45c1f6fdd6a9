"""The MLP block's bias + GELU with its own VJP (towers/bias_gelu.py) vs flax's, timed in turn.

  python benchmarks/bias_gelu.py [--rounds 5]                       one MLP block, fwd + bwd
  python benchmarks/bias_gelu.py --step "ViT w192" --rounds 4       whole vs_open_clip.py steps

towers.common.MlpBlock computes gelu(x W0 + b0) through bias_gelu, whose backward pass keeps
only x W0 and b0; the reference here is the block as flax writes it (nn.Dense, nn.gelu, nn.Dense,
same parameter names), whose differentiation keeps GELU's tanh as an extra residual. The block
part times jax.vjp of both at the MLP shapes of the two vs_open_clip.py setups; --step builds
that script's hetclip step with each block and times the compiled steps in turn (best step of
each). Speed-ups are the reference's time over the committed block's.
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

# name: (batch, tokens, width, MLP width)
BLOCKS = {
    "ViT w192 p8 @ 64 px, batch 256": (256, 65, 192, 768),
    "ViT-S/16 @ 224 px, batch 64": (64, 197, 384, 1536),
}


def reference_block():
    """MlpBlock as flax writes it: Dense_0 -> nn.gelu -> Dense_1 (the towers' flat products)."""
    import flax.linen as nn

    from towers.common import token_flat_dot_general

    class FlaxMlpBlock(nn.Module):
        mlp_dim: int
        dropout: float = 0.0
        dtype: object = None
        param_dtype: object = None

        @nn.compact
        def __call__(self, x, deterministic=True):
            dense = dict(dtype=self.dtype, dot_general=token_flat_dot_general)
            y = nn.gelu(nn.Dense(self.mlp_dim, name="Dense_0", **dense)(x))
            return nn.Dense(x.shape[-1], name="Dense_1", **dense)(y)

    return FlaxMlpBlock


def blocks(rounds: int) -> None:
    import jax

    from towers.common import MlpBlock

    for name, (batch, tokens, width, mlp_dim) in BLOCKS.items():
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(keys[0], (batch, tokens, width))
        grad_out = jax.random.normal(keys[2], (batch, tokens, width))
        calls = {}
        for form, block in [("flax", reference_block()(mlp_dim)), ("bias_gelu", MlpBlock(mlp_dim))]:
            params = block.init(keys[1], x)

            def forward_backward(params, x, grad_out, block=block):
                _, vjp = jax.vjp(lambda p, a: block.apply(p, a), params, x)
                return vjp(grad_out)

            step = jax.jit(forward_backward).lower(params, x, grad_out).compile()
            jax.block_until_ready(step(params, x, grad_out))
            args = (params, x, grad_out)
            calls[form] = lambda step=step, args=args: jax.block_until_ready(step(*args))
        best = step_ab.best_in_turn(calls, rounds, 5)
        print(
            f"{name}, MLP block [{batch * tokens}, {width}] -> {mlp_dim}: flax "
            f"{best['flax'] * 1e3:.2f} ms, bias_gelu {best['bias_gelu'] * 1e3:.2f} ms "
            f"({best['flax'] / best['bias_gelu']:.3f}x)",
            flush=True,
        )


def steps(only: str, rounds: int) -> None:
    from towers import common

    variants = {"flax": reference_block(), "bias_gelu": common.MlpBlock}
    name, best = step_ab.compare_steps(only, rounds, common, "MlpBlock", variants)
    step_ab.report(name, best, "flax", "bias_gelu")


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    step_ab.main(__doc__, blocks, steps, rounds=5)
