"""Attention implementations at a ViT-B/16 shape: error against float32 and fwd+bwd time.

  python benchmarks/attention.py [--batch 256] [--tokens 197,256] [--heads 12] [--head-dim 64]
  python benchmarks/attention.py --batch 64 --tokens 197 --heads 6 --dtype float32   (ViT-S, CPU)
  python benchmarks/attention.py --step "ViT w192" --rounds 5       whole vs_open_clip.py steps

Times jit(grad) of sum(attention(q, k, v) * w) for XLA's attention (jax.nn.dot_product_attention),
towers.common.heads_major_attention (what towers.common.fused_attention runs off cuDNN and off the
CPU), towers.common.per_head_attention (what it runs on a CPU without the compiled kernel), on a CPU
in float32 the compiled kernel (towers.cpu_attention, what it runs there) and, on a GPU, cuDNN's
fused kernel, plain and on sequences padded to a multiple of 64 (towers.common.padded_attention,
what fused_attention runs there), alternately; the error of each is ||out - ref|| / ||ref|| against
XLA's attention on the float32 upcast of the same inputs. Shapes cuDNN rejects (JAX raises
NotImplementedError, e.g. 197 tokens) are reported as such. --torch-python PY also times torch's
fused attention (F.scaled_dot_product_attention, q, k, v as [B, H, T, d], 2 threads on a CPU) on the
same shape in that interpreter (a benchmark-only venv with torch, as vs_open_clip.py uses). --step
builds that vs_open_clip.py setup's hetclip step twice, the CPU attention as the compiled kernel and
as per_head_attention, and times the compiled steps in turn.
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
    parser.add_argument("--torch-python", help="python of a venv with torch: time its attention")
    parser.add_argument("--step", help="time whole steps of the vs_open_clip.py setup so named")
    parser.add_argument("--rounds", type=int, default=3, help="with --step")
    args = parser.parse_args()
    if args.step:
        steps(args.step, args.rounds)
        return
    print(f"attention fwd+bwd, {args.dtype}, on {jax.devices()[0].device_kind}")
    for tokens in map(int, args.tokens.split(",")):
        shape = (args.batch, tokens, args.heads, args.head_dim)
        compare(shape, args.repeats, args.dtype)
        if args.torch_python:
            torch_attention(args.torch_python, shape, args.repeats, args.dtype)


# fwd + bwd of torch's fused attention, best of `repeats` after a warm-up (no JAX in that venv).
TORCH_TIMING = """
import sys, time, torch
import torch.nn.functional as F
batch, tokens, heads, head_dim, repeats = map(int, sys.argv[1:6])
dtype = getattr(torch, sys.argv[6])
device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cpu":
    torch.set_num_threads(2)
shape = (batch, heads, tokens, head_dim)
q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
w = torch.randn(shape, device=device, dtype=dtype)
def step():
    (F.scaled_dot_product_attention(q, k, v) * w).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
step()
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - start)
print(best, torch.__version__)
"""


def torch_attention(python: str, shape: tuple[int, int, int, int], repeats: int, dtype: str):
    import subprocess

    batch, tokens, heads, head_dim = shape
    args = [str(x) for x in (*shape, 2 * repeats)] + [dtype]
    result = subprocess.run(
        [python, "-c", TORCH_TIMING, *args], capture_output=True, text=True, check=True
    )
    best, version = result.stdout.split()
    flops = 3 * 4 * batch * heads * tokens**2 * head_dim
    print(
        f"{shape} torch {version} scaled_dot_product_attention: {float(best) * 1e3:.2f} ms, "
        f"{flops / float(best) / 1e9:,.0f} GFLOP/s"
    )


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
    from towers import cpu_attention
    from towers.common import heads_major_attention, padded_attention, per_head_attention

    gpu = jax.default_backend() == "gpu"
    kernel = ["kernel"] if cpu_attention.supports(q, k, v) else []
    for name in ["xla", "heads-major", "per-head", *kernel] + (
        ["cudnn", "cudnn, padded"] if gpu else []
    ):

        def attend(q, k, v, name=name):
            if name.endswith("padded"):  # what towers.common.fused_attention runs
                return padded_attention(q, k, v, "cudnn")
            if name == "heads-major":
                return heads_major_attention(q, k, v)
            if name == "per-head":
                return per_head_attention(q, k, v)
            if name == "kernel":
                return cpu_attention.attention(q, k, v)
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
    import towers.cpu_attention

    spec = importlib.util.spec_from_file_location("step_ab", os.path.join(HERE, "step_ab.py"))
    step_ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_ab)
    name, best = step_ab.compare_steps(
        only,
        rounds,
        towers.cpu_attention,
        "supports",  # False: fused_attention runs per_head_attention on a CPU
        {"per-head": lambda *args, **kwargs: False, "kernel": towers.cpu_attention.supports},
    )
    print(
        f"{name}: per-head {best['per-head']:.3f} s / step, kernel {best['kernel']:.3f} s / step, "
        f"speed-up {best['per-head'] / best['kernel']:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    from hetclip import allocator

    allocator.reexec_with_allocator()
    main()
