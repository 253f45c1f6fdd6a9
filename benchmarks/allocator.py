"""Training steps under each of hetclip/allocator.py's allocators: tcmalloc preloaded (with
XLA:CPU's inline dispatch, the default, and with JAX's asynchronous dispatch) vs glibc's malloc
with huge pages, in separate processes run in turn.

  python benchmarks/allocator.py [--only "ViT w192"] [--rounds 2] [--steps 5]

Each round starts one process per allocator (the environment allocator.allocator_env gives, with
tcmalloc from allocator.find_tcmalloc), which builds hetclip's step of a vs_open_clip.py setup and
runs `--steps` steps, reporting each step's wall time, the process's user and system CPU time
during it (os.times) and its resident memory after it; the first step (compilation done,
buffers touched for the first time) is reported but left out of the best step. The summary
also counts the processes whose resident memory grew after their first step (a second step's
temporaries allocated while the previous step's were still held).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = """
import json, os, sys, time
sys.path.insert(0, {here!r})
import jax
from hetclip import allocator
allocator.inline_cpu_dispatch()
import step_ab
vs_open_clip = step_ab.load("vs_open_clip")
name = [n for n in vs_open_clip.SETUPS if n.startswith({only!r})][0]
step, state, inputs, _, _ = vs_open_clip.build_hetclip_step(name)
step = step.lower(state, inputs).compile()
page = os.sysconf("SC_PAGE_SIZE")
jax.block_until_ready((state, inputs))
for _ in range({steps}):
    start, cpu = time.perf_counter(), os.times()
    state, metrics = step(state, inputs)
    jax.block_until_ready(metrics)
    wall, after = time.perf_counter() - start, os.times()
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * page
    print("STEP", json.dumps({{"setup": name, "wall_s": wall, "user_s": after.user - cpu.user,
          "system_s": after.system - cpu.system, "resident_gb": resident / 1e9}}), flush=True)
"""


def run(variant_env: dict, only: str, steps: int) -> list[dict]:
    code = CHILD.format(here=HERE, only=only, steps=steps)
    result = subprocess.run(
        [sys.executable, "-c", code], env=variant_env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"the step process failed:\n{result.stderr[-3000:]}")
    return [json.loads(line[5:]) for line in result.stdout.splitlines() if line.startswith("STEP ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ViT w192", help="a vs_open_clip.py setup")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", help="also write the results here (JSON lines)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from hetclip import allocator

    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    tcmalloc = allocator.find_tcmalloc(base)
    if tcmalloc is None:
        raise SystemExit("no tcmalloc found: run `python3 run.py test` once (it fetches it)")
    variants = {
        "glibc + huge pages": allocator.allocator_env({**base, "HETCLIP_TCMALLOC": "0"}),
        "tcmalloc, async dispatch": allocator.allocator_env(
            {**base, allocator.ASYNC_DISPATCH_SWITCH: "1"}, tcmalloc
        ),
        "tcmalloc": allocator.allocator_env(base, tcmalloc),
    }
    rows = []
    for round_ in range(args.rounds):
        for variant, env in variants.items():
            for index, step in enumerate(run(env, args.only, args.steps)):
                rows.append({"variant": variant, "round": round_, "step": index, **step})
                print(
                    f"{variant:>24} round {round_} step {index}: {step['wall_s']:.3f} s, user "
                    f"{step['user_s']:.2f} s, system {step['system_s']:.2f} s, resident "
                    f"{step['resident_gb']:.2f} GB",
                    flush=True,
                )
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        later = [r for r in mine if r["step"] > 0]
        system = [r["system_s"] for r in later]
        grew = sum(
            max(r["resident_gb"] for r in later if r["round"] == round_)
            > 1.1 * next(r["resident_gb"] for r in mine if r["round"] == round_ and not r["step"])
            for round_ in range(args.rounds)
        )
        print(
            f"{variant}: best step {min(r['wall_s'] for r in later):.3f} s, system time "
            f"{min(system):.2f}-{max(system):.2f} s per step, resident "
            f"{max(r['resident_gb'] for r in mine):.2f} GB at most; grew after the first step "
            f"in {grew} of {args.rounds} processes"
        )
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
