"""Attention implementations at a ViT-B/16 shape: error against float32 and fwd+bwd time.

  python benchmarks/attention.py [--batch 256] [--tokens 197,256] [--heads 12] [--head-dim 64]
  python benchmarks/attention.py --batch 64 --tokens 197 --heads 6 --dtype float32   (ViT-S, CPU)
  python benchmarks/attention.py --step "ViT w192" --rounds 5       whole vs_open_clip.py steps

Times jit(grad) of sum(attention(q, k, v) * w) for XLA's attention (jax.nn.dot_product_attention),
towers.common.heads_major_attention (what towers.common.fused_attention runs off cuDNN and off
the CPU), towers.common.per_head_attention (what it runs on the CPU) and, on
a GPU, cuDNN's fused kernel, plain and on sequences padded to a multiple of 64
(towers.common.padded_attention, what fused_attention runs there), alternately; the error of
each is ||out - ref|| / ||ref|| against XLA's attention on the float32 upcast of the same inputs.
Shapes cuDNN rejects (JAX raises NotImplementedError, e.g. 197 tokens) are reported as such.
--step builds that vs_open_clip.py setup's hetclip step twice, the CPU attention as
per_head_attention and as heads_major_attention, and times the compiled steps in turn.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]


def main() -> None:
    import jax

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tokens", default="197,256", help="comma-separated sequence lengths")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--step", help="time whole steps of the vs_open_clip.py setup so named")
    parser.add_argument("--rounds", type=int, default=3, help="with --step")
    args = parser.parse_args()
    if args.step:
        steps(args.step, args.rounds)
        return
    print(f"attention fwd+bwd, {args.dtype}, on {jax.devices()[0].device_kind}")
    for tokens in map(int, args.tokens.split(",")):
        compare((args.batch, tokens, args.heads, args.head_dim), args.repeats, args.dtype)


def compare(shape: tuple[int, int, int, int], repeats: int, dtype: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    q, k, v, w = (
        jax.random.normal(jax.random.PRNGKey(i), shape, jnp.float32).astype(dtype) for i in range(4)
    )
    reference = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
    batch, tokens, heads, head_dim = shape
    flops = 3 * 4 * batch * heads * tokens**2 * head_dim  # 2 [T, T, d] matmuls fwd, 4 bwd
    timed = {}
    from towers.common import heads_major_attention, padded_attention, per_head_attention

    gpu = jax.default_backend() == "gpu"
    for name in ["xla", "heads-major", "per-head"] + (["cudnn", "cudnn, padded"] if gpu else []):

        def attend(q, k, v, name=name):
            if name.endswith("padded"):  # what towers.common.fused_attention runs
                return padded_attention(q, k, v, "cudnn")
            if name == "heads-major":
                return heads_major_attention(q, k, v)
            if name == "per-head":
                return per_head_attention(q, k, v)
            return jax.nn.dot_product_attention(q, k, v, implementation=name)

        def loss(q, k, v, w, attend=attend):
            return jnp.sum(attend(q, k, v).astype(jnp.float32) * w.astype(jnp.float32))

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        try:
            out = jax.jit(attend)(q, k, v).astype(jnp.float32)
            jax.block_until_ready(grad(q, k, v, w))
        except NotImplementedError as error:
            print(f"{shape} {name}: unsupported ({error})")
            continue
        error = float(jnp.linalg.norm(out - reference) / jnp.linalg.norm(reference))
        assert np.isfinite(error) and error < 2e-2, f"{name} attention is wrong: {error}"
        timed[name] = (grad, error, float("inf"))
    for _ in range(2):  # alternating rounds
        for name, (grad, error, best) in timed.items():
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(grad(q, k, v, w))
                best = min(best, time.perf_counter() - start)
            timed[name] = (grad, error, best)
    for name, (_, error, best) in timed.items():
        print(
            f"{shape} {name}: {best * 1e3:.2f} ms ({best / timed['xla'][2]:.2f}x XLA), "
            f"{flops / best / 1e9:,.0f} GFLOP/s, relative error {error:.1e}"
        )


def steps(only: str, rounds: int) -> None:
    import towers.common

    spec = importlib.util.spec_from_file_location("step_ab", os.path.join(HERE, "step_ab.py"))
    step_ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_ab)
    name, best = step_ab.compare_steps(
        only,
        rounds,
        towers.common,
        "per_head_attention",  # what fused_attention runs on a CPU
        {
            "heads-major": towers.common.heads_major_attention,
            "per-head": towers.common.per_head_attention,
        },
    )
    print(
        f"{name}: heads-major {best['heads-major']:.3f} s / step, per-head "
        f"{best['per-head']:.3f} s / step, speed-up {best['heads-major'] / best['per-head']:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    from hetclip import hugepages

    hugepages.reexec_with_huge_pages()
    main()
