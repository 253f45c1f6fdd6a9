"""The CPU kernels of a git revision against the working tree's, timed in turn in one process.

  python benchmarks/kernel_ab.py [--baseline HEAD] [--rounds 15] [--only weight_gradient]
  python benchmarks/kernel_ab.py --step "ViT w192" [--rounds 4]  whole steps

The baseline's kernel sources (towers/*.cc, *.h at --baseline) are compiled into a second
library whose handlers are registered beside the working tree's under the prefix "baseline_"
(towers.cpu_kernels.register); computations traced inside `cpu_kernels.calls_into` call them.
Both builds then run in the same process, in turn, so that this machine's drift (3-5% between
sessions, more between processes) hits both alike. The kernels alone: attention's forward (with
the probabilities) and backward calls at the towers' shapes of the two vs_open_clip.py CPU
setups, each timed on its own and reported with their sum, and the weight gradient at every
dense layer's shape (benchmarks/weight_gradient.py's list); --step: the hetclip step of that
vs_open_clip.py setup built with each library. Speed-ups are the baseline's best time over the
working tree's.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
_spec = importlib.util.spec_from_file_location("step_ab", os.path.join(HERE, "step_ab.py"))
step_ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_ab)

PREFIX = "baseline_"
# name: [B, T, H, d] of q, k and v
ATTENTION_SHAPES = {
    "ViT w192 p8 @ 64 px, batch 256": (256, 65, 3, 64),
    "text w256 ctx 32, batch 256": (256, 32, 4, 64),
    "ViT-S/16 @ 224 px, batch 64": (64, 197, 6, 64),
}
# name: (M, K, F) of x [M, K] and dy [M, F]: every dense layer of the two setups
WEIGHT_GRADIENT_SHAPES = step_ab.load("weight_gradient").SHAPES


def load_baseline(revision: str) -> None:
    """Builds the kernel sources of git `revision` (once; cached beside the working tree's
    library) and registers their handlers under PREFIX."""
    from towers import cpu_kernels

    repository = Path(cpu_kernels.HERE).parent
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=repository,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cxx = cpu_kernels.compiler()
    if cxx is None:
        raise SystemExit("kernel_ab.py needs a C++ compiler (set CXX or install g++)")
    path = cpu_kernels.cache_dir() / f"baseline-{commit[:16]}.so"
    if not path.exists():
        with tempfile.TemporaryDirectory() as folder:
            sources = []
            for file in (*cpu_kernels.SOURCES, *cpu_kernels.HEADERS):
                relative = file.relative_to(repository).as_posix()
                shown = subprocess.run(
                    ["git", "show", f"{commit}:{relative}"],
                    cwd=repository,
                    capture_output=True,
                    text=True,
                )
                if shown.returncode:
                    raise SystemExit(
                        f"{revision} has no {relative}: compare with a revision that has every "
                        "kernel of the working tree, or time a new kernel against XLA's op "
                        "with its own script (benchmarks/layer_norm.py, weight_gradient.py)"
                    )
                text = shown.stdout
                (Path(folder) / file.name).write_text(text)
                if file in cpu_kernels.SOURCES:
                    sources.append(Path(folder) / file.name)
            cpu_kernels.build(cxx, path, tuple(sources))
    cpu_kernels.register(ctypes.cdll.LoadLibrary(str(path)), PREFIX)
    print(f"baseline: the kernels of {revision} ({commit[:12]}); new: the working tree's")


def builds() -> dict:
    """{variant: function returning the context manager that variant's traces run in}."""
    import contextlib

    from towers import cpu_kernels

    return {"baseline": lambda: cpu_kernels.calls_into(PREFIX), "new": contextlib.nullcontext}


def kernels(rounds: int, only: str = "") -> None:
    import jax

    from towers import cpu_attention, cpu_dense

    def timed(function, arrays) -> dict:
        """{variant: best seconds} of `function` traced and compiled inside each build."""
        calls = {}
        for variant, context in builds().items():
            with context():  # a fresh function: jit would reuse a trace of `function`
                compiled = jax.jit(lambda *a: function(*a)).lower(*arrays).compile()
            jax.block_until_ready(compiled(*arrays))
            calls[variant] = lambda c=compiled: jax.block_until_ready(c(*arrays))
        return step_ab.best_in_turn(calls, rounds, 3)

    def report(name: str, best: dict, flops: float, parts: str = "") -> None:
        rates = {v: flops / s / 1e9 for v, s in best.items()}
        print(
            f"{name}: baseline {best['baseline'] * 1e3:.2f} ms ({rates['baseline']:.0f} GFLOP/s), "
            f"new {best['new'] * 1e3:.2f} ms ({rates['new']:.0f} GFLOP/s), speed-up "
            f"{best['baseline'] / best['new']:.3f}{parts}",
            flush=True,
        )

    for name, shape in ATTENTION_SHAPES.items() if only != "weight_gradient" else ():
        batch, tokens, heads, depth = shape
        q, k, v, grad_out = jax.random.normal(jax.random.PRNGKey(0), (4, *shape))
        _, probs = cpu_attention._forward_with_probs(q, k, v)
        forward = timed(cpu_attention._forward_with_probs, (q, k, v))
        backward = timed(cpu_attention._backward, (q, k, v, probs, grad_out))
        both = {v: forward[v] + backward[v] for v in forward}
        product = 2 * batch * heads * tokens * tokens * depth  # one of the 6 products
        parts = ", ".join(
            f"{label} {times['baseline'] * 1e3:.2f} -> {times['new'] * 1e3:.2f} ms"
            for label, times in (("forward", forward), ("backward", backward))
        )
        report(f"attention {list(shape)} ({name})", both, 6 * product, f" ({parts})")
    for name, (rows, depth, features) in (
        WEIGHT_GRADIENT_SHAPES.items() if only != "attention" else ()
    ):
        keys = jax.random.split(jax.random.PRNGKey(1))
        arrays = (
            jax.random.normal(keys[0], (rows, depth)),
            jax.random.normal(keys[1], (rows, features)),
        )
        report(
            f"weight gradient [{rows}, {depth}]^T x [{rows}, {features}] ({name})",
            timed(cpu_dense.weight_gradient, arrays),
            2 * rows * depth * features,
        )


def steps(only: str, rounds: int) -> None:
    name, best = step_ab.compare_steps_in(only, rounds, builds())
    step_ab.report(name, best, "baseline", "new")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision of the baseline kernels")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--step", help="time whole steps of the vs_open_clip.py setup so named")
    parser.add_argument(
        "--only", choices=("attention", "weight_gradient"), default="", help="one kernel family"
    )
    args = parser.parse_args()
    from towers import cpu_kernels

    if cpu_kernels.library() is None:
        raise SystemExit("the working tree's kernels could not be built (see the warning)")
    load_baseline(args.baseline)
    if args.step:
        steps(args.step, args.rounds or 4)
    else:
        kernels(args.rounds or 15, args.only)


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    main()
