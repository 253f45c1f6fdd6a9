"""Where a training step's CPU time goes on XLA:CPU, by library and kernel family, from perf.

  python benchmarks/cpu_time.py [--only "ViT-S/16 @224px"] [--steps 3] [--top 15]
  HETCLIP_CPU_ATTENTION=1 python benchmarks/cpu_time.py ...      (a kernel switch, as it runs)

Runs a setup of benchmarks/train_step.py (or hetclip's side of one of vs_open_clip.py) in a
child process under `perf record -e cpu-clock -k CLOCK_MONOTONIC` (software sampling: it works
in VMs without hardware counters) and keeps only the samples taken while the timed steps ran
(after compiling and a warm-up step). Each sampled function is put in one family: XLA's
generated code (its fusions: elementwise work, copies, reductions), YNNPACK's product kernels
(XLA:CPU's default matmuls), YNNPACK's other kernels, Eigen (XLA's other products and
convolutions), hetclip's compiled kernels (towers/*.cc, each function on its own row), and the
runtime (Python, libc, the allocator, the OS kernel). Unlike a jax.profiler trace, which gives
each op's wall time however many threads it kept busy, these are shares of the CPU time the
process used, so ops that overlap or share the cores are weighed by the work they did.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This folder's towers.py would shadow the `towers` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
_spec = importlib.util.spec_from_file_location("step_ab", os.path.join(HERE, "step_ab.py"))
step_ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_ab)

# (family, test on "dso symbol"), first match wins.
FAMILIES = (
    ("XLA's generated code", re.compile(r"^\[JIT\]")),
    ("YNNPACK products", re.compile(r"ynn::(dot_|run_dot)")),
    ("YNNPACK other", re.compile(r"ynn::")),
    ("Eigen", re.compile(r"Eigen::")),
    ("hetclip kernels", re.compile(r"^cpu_kernels")),
    ("XLA runtime", re.compile(r"^libjax_common")),
)


def family(dso: str, symbol: str) -> str:
    text = f"{dso} {symbol}"
    return next((name for name, pattern in FAMILIES if pattern.search(text)), "other runtime")


def child(only: str, steps: int) -> None:
    """Builds and warms the step, then prints the CLOCK_MONOTONIC span of the timed steps."""
    import jax

    name, (step, state, batch, flops, _) = step_ab.load("vs_open_clip").build_any_step(only)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.monotonic()
    for _ in range(steps):
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
    end = time.monotonic()
    print(json.dumps({"setup": name, "start": start, "end": end, "gflop": flops / 1e9}))


def shares(perf_data: str, start: float, end: float) -> collections.Counter:
    """{(dso, symbol): percent of the samples between start and end (seconds, monotonic)}."""
    report = subprocess.run(
        ["perf", "report", "-i", perf_data, "--stdio", "--sort", "dso,symbol", "-t", "\t"]
        + ["--time", f"{start:.6f},{end:.6f}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = collections.Counter()
    for line in report.splitlines():
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) >= 3 and fields[0].endswith("%"):  # overhead, dso, "[.] symbol", ""
            symbol = re.sub(r"^\[[.k]\]\s*", "", fields[2])
            rows[(fields[1], symbol)] += float(fields[0].rstrip("%"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ViT-S/16 @224px")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="hetclip and other functions shown")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "cpu_time.json"))
    args = parser.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("cpu_time.py needs Linux perf: install it (Debian: linux-perf)")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        record = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "200", "-k", "CLOCK_MONOTONIC"]
        command = [*record, "-o", data, sys.executable, __file__, "--child", args.only]
        run = subprocess.run([*command, str(args.steps)], capture_output=True, text=True)
        result = next((ln for ln in run.stdout.splitlines() if ln.startswith('{"setup"')), None)
        if run.returncode or result is None:
            raise SystemExit(
                f"the profiled step failed (perf may be forbidden here):\n{run.stderr[-2000:]}"
            )
        span = json.loads(result)
        rows = shares(data, span["start"], span["end"])
    families = collections.Counter()
    for (dso, symbol), percent in rows.items():
        families[family(dso, symbol)] += percent
    seconds = (span["end"] - span["start"]) / args.steps
    print(f"{span['setup']}: {seconds:.2f} s / step under perf, {span['gflop']:.0f} GFLOP")
    for name, percent in families.most_common():
        print(f"{percent:6.2f} %  {name}")
    # Generated code has no symbols (one row per address): only its family total means much.
    functions = [(k, p) for k, p in rows.most_common() if not k[0].startswith("[JIT]")]
    functions = functions[: args.top]
    print("functions (XLA's generated code left out):")
    for (dso, symbol), percent in functions:
        print(f"{percent:6.2f} %  {family(dso, symbol)}: {symbol[:100]}")
    summary = {
        "setup": span["setup"],
        "step_s_under_perf": seconds,
        "switches": {k: v for k, v in os.environ.items() if k.startswith("HETCLIP_CPU_")},
        "families_percent": dict(families),
        "functions_percent": [[f"{d} {s}", p] for (d, s), p in functions],
    }
    step_ab.load("train_step").write_result(args.out, None, [summary])


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        from hetclip import allocator  # as the hetclip command and the other benchmarks run

        allocator.reexec_with_allocator()
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
