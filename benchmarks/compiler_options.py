"""One training step compiled under several XLA compiler options, timed in turn in one process.

  python benchmarks/compiler_options.py [--only "tiny default, CLIP"] [--rounds 3] \
      [--variants '{"default": {}, "onednn": {"xla_cpu_use_onednn": true}}']

Builds a setup of benchmarks/train_step.py (or hetclip's side of one of vs_open_clip.py) once,
compiles its lowered step with each variant's `compiler_options` (XLA DebugOptions fields; enum
fields take their enum names, e.g. LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT), and times the variants in
turn (`--rounds` rounds of `--steps` steps each, best step kept), so the machine's drift hits every
variant alike. A variant that does not compile is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

ONEDNN_PRODUCTS = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xla_cpu_use_onednn": True,
}
DEFAULT_VARIANTS = {"default": {}, "onednn_products": ONEDNN_PRODUCTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="tiny default, CLIP", help="a train_step.py or vs_open_clip.py setup"
    )
    parser.add_argument("--variants", default=json.dumps(DEFAULT_VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round and variant")
    args = parser.parse_args()
    import jax

    spec = importlib.util.spec_from_file_location(
        "vs_open_clip", os.path.join(HERE, "vs_open_clip.py")
    )
    vs_open_clip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vs_open_clip)
    only, (step, state, batch, flops, _) = vs_open_clip.build_any_step(args.only)
    lowered = step.lower(state, batch)
    compiled = {}
    for name, options in json.loads(args.variants).items():
        try:
            executable = lowered.compile(compiler_options=options) if options else lowered.compile()
        except Exception as error:  # an option this XLA does not take: report, keep going
            print(f"{name}: does not compile: {str(error)[:300]}", flush=True)
            continue
        state, metrics = executable(state, batch)  # warm-up
        jax.block_until_ready(metrics)
        compiled[name] = executable
    best = {name: float("inf") for name in compiled}
    for _ in range(args.rounds):
        for name, executable in compiled.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                state, metrics = executable(state, batch)
                jax.block_until_ready(metrics)
                best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{only} | {name}: {seconds:.3f} s / step, {flops / seconds / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    main()
