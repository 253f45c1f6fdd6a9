"""Where a training step's time goes on XLA:CPU: each kernel's time, FLOPs and GFLOP/s.

  python benchmarks/profile_step.py [--only "ViT-S/16 CLIP 224px"] [--steps 2]

Builds a setup of benchmarks/train_step.py (or hetclip's side of one of vs_open_clip.py), traces a
few steps with jax.profiler, and reads the trace (XSpace protobuf, parsed with TensorFlow's copy of
the schema). Each kernel XLA:CPU ran (a matmul fusion handed to a library, an elementwise fusion, a
copy) is matched to the compiled HLO to get the op it came from and, for matmuls, its FLOPs (2 *
output elements * contracted size). Rows group the same op across layers ("encoderblock_3" ->
"blk"); hetclip's own kernels (XLA custom calls, "ffi_call") likewise, without FLOPs. Kernel
times are summed over the worker threads, so they can exceed the step's wall time where kernels
overlap.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib.util
import math
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dims(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def kernel_table(hlo: str) -> dict[str, tuple[str, float]]:
    """{fusion / instruction name: (op_name metadata, matmul FLOPs)} from compiled HLO text."""
    bodies = dict(re.findall(r"^%(\S+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M))
    shapes = {k: _dims(v) for k, v in re.findall(r"%(\S+) = \w+\[([\d,]*)\]", hlo)}
    table = {}
    for name, rest in re.findall(r"^\s*(?:ROOT )?%(\S+) = (.*)$", hlo, re.M):
        op = re.search(r'op_name="([^"]*)"', rest)
        called = re.search(r"calls=%(\S+?)[,\s]", rest)
        body = bodies.get(called.group(1), "") if called else f"= {rest}"
        flops = 0.0
        for out, lhs, tail in re.findall(r"= \w+\[([\d,]*)\]\S* dot\(%(\S+), %\S+\)(.*)", body):
            contracted = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", tail)
            k = math.prod(shapes[lhs][i] for i in _dims(contracted.group(1))) if contracted else 1
            flops += 2.0 * math.prod(_dims(out)) * k
        table[name] = (op.group(1) if op else "", flops)
    return table


def kernel_times(trace_dir: str) -> collections.Counter:
    """{kernel name: seconds summed over XLA's worker threads} from a jax.profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(
        glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0], "rb"
    ) as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):  # XLA:CPU's worker threads
                continue
            for event in line.events:
                times[names[event.metadata_id]] += event.duration_ps / 1e12
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ViT-S/16 CLIP 224px")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "profile_step.json"))
    args = parser.parse_args()
    import jax

    train_step = _load("train_step")
    name, (step, state, batch, flops, _) = _load("vs_open_clip").build_any_step(args.only)
    # One compile: the compiled step gives the HLO and is what is timed and traced.
    step = step.lower(state, batch).compile()
    table = kernel_table(step.as_text())
    state, seconds = train_step.time_steps(step, state, batch, 2)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                state, metrics = step(state, batch)
                jax.block_until_ready(metrics)
        times = kernel_times(trace_dir)
    groups = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for kernel, total in times.items():
        if kernel not in table:
            continue  # the runtime's own spans (executor, waits), not kernels
        op, kernel_flops = table[kernel]
        op = re.sub(r"encoderblock_\d+", "blk", op.removeprefix("jit(step_fn)/")) or kernel
        kind = "matmul" if kernel_flops else re.sub(r"[.\d]+$", "", kernel)
        # hetclip's compiled kernels (attention, weight gradients) are custom calls that XLA
        # counts no FLOPs for: their rows keep the op, so that each kind shows on its own.
        group = groups[(kind, op if kernel_flops or kind == "ffi_call" else "")]
        group[0] += total / args.steps
        group[1] += kernel_flops
        group[2] += 1
    matmul_s = sum(g[0] for k, g in groups.items() if k[0] == "matmul")
    other_s = sum(g[0] for k, g in groups.items() if k[0] != "matmul")
    matmul_flops = sum(g[1] for g in groups.values())
    print(f"{name}: {seconds:.2f} s / step untraced, {flops / 1e9:.0f} GFLOP (XLA's count)")
    print(
        f"matmul kernels: {matmul_s:.2f} s / step, {matmul_flops / 1e9:.0f} GFLOP, "
        f"{matmul_flops / matmul_s / 1e9:.0f} GFLOP/s; other kernels: {other_s:.2f} s / step"
    )
    rows = []
    for (kind, op), (total, kernel_flops, count) in sorted(groups.items(), key=lambda g: -g[1][0]):
        rows.append(
            {
                "kind": kind,
                "op": op,
                "kernels": count,
                "s_per_step": total,
                "gflop": kernel_flops / 1e9,
                "gflop_per_s": kernel_flops / total / 1e9 if kernel_flops else None,
            }
        )
    for row in rows[: args.rows]:
        rate = f"{row['gflop_per_s']:5.0f} GFLOP/s" if row["gflop_per_s"] else " " * 12
        print(
            f"{row['s_per_step']:7.3f} s  {rate}  x{row['kernels']:<4d} {row['kind']} {row['op']}"
        )
    summary = {
        "setup": name,
        "step_s": seconds,
        "xla_gflop_per_step": flops / 1e9,
        "matmul_s_per_step": matmul_s,
        "matmul_gflop_per_step": matmul_flops / 1e9,
        "other_s_per_step": other_s,
        "rows": rows,
    }
    train_step.write_result(args.out, train_step.measured_peak(False)[0], [summary])


if __name__ == "__main__":
    from hetclip import allocator

    allocator.reexec_with_allocator()
    main()
