"""Full training-step time and model FLOPs utilisation (MFU) on this machine.

  python benchmarks/train_step.py [--repeats 3] [--only tiny] [--out results.json]

One step = towers forward + loss + backward + AdamW update (hetclip.train.step.make_train_step,
jitted, on a one-device mesh) on synthetic batches, so the input pipeline is not measured here
(see data_throughput.py). FLOPs are XLA's count of the compiled step (cost_analysis), which
includes everything executed; MFU = FLOPs / step time / the float32 matmul peak measured at the
start of the same run (jit(jnp.dot) at 2048^3). The HET-XL rows are reported as a ratio to the
deterministic CLIP step of the same towers, measured alternately in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

SETUPS = {
    # name: (config spec, overrides, resolution, text length)
    "tiny default, CLIP": ("default.py:hetxl=False", {}, 64, 16),
    "tiny default, HET-XL CLIP (S=16)": ("default.py:hetxl=True", {}, 64, 16),
    "ViT-S/16 CLIP 224px, batch 64": (
        "default.py:hetxl=False,res=224,batch=64",
        {"model.image.variant": "S/16", "model.text.variant": "S", "model.embed_dim": 384},
        224,
        32,
    ),
    "ViT-S/16 HET-XL CLIP 224px, batch 64": (
        "default.py:hetxl=True,res=224,batch=64",
        {"model.image.variant": "S/16", "model.text.variant": "S", "model.embed_dim": 384},
        224,
        32,
    ),
}


def matmul_peak_gflops() -> float:
    spec = importlib.util.spec_from_file_location("heads_benchmark", os.path.join(HERE, "heads.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.matmul_peak_gflops()


def build_step(spec: str, overrides: dict, res: int, text_len: int):
    """(jitted step, state, synthetic batch, XLA FLOPs per step, batch size) for a config spec
    with {"a.b.c": value} overrides."""
    import jax
    import numpy as np

    from hetclip.config import load_config
    from hetclip.models import build_model
    from hetclip.sharding import make_mesh
    from hetclip.train import optim
    from hetclip.train.objectives import make_objective
    from hetclip.train.step import init_params, init_state, make_train_step

    config = load_config(spec)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    batch_size = int(config.input.batch_size)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, (batch_size, res, res, 3)).astype(np.float32),
        "text": rng.integers(1, config.model.text.vocab_size, (batch_size, text_len)).astype(
            np.int32
        ),
    }
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    model = build_model(config.model)
    params, shardings = init_params(model, batch, 0, mesh)
    lr = optim.schedule(config.schedule, 1000)
    tx = optim.optimizer(config.optim, lr, params)
    state, state_shardings = init_state(tx, params, shardings, mesh)
    step = make_train_step(
        make_objective(model, config, mesh), tx, lr, seed=0, mesh=mesh, shardings=state_shardings
    )
    flops = step.lower(state, batch).compile().cost_analysis()
    flops = flops[0] if isinstance(flops, list) else flops
    return step, state, batch, float(flops["flops"]), batch_size


def time_steps(step, state, batch, repeats: int):
    import jax

    state, metrics = step(state, batch)  # compile + warm up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return state, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setup")
    parser.add_argument("--only", help="run only setups whose name contains this")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train_step.json"))
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    print(f"matmul peak (float32, jit(jnp.dot) 2048^3): {peak:.0f} GFLOP/s", flush=True)
    built = {
        name: build_step(*setup)
        for name, setup in SETUPS.items()
        if not args.only or args.only in name
    }
    best = {name: float("inf") for name in built}
    states = {name: b[1] for name, b in built.items()}
    for _ in range(args.rounds):  # alternate so machine noise hits every setup alike
        for name, (step, _, batch, _, _) in built.items():
            states[name], seconds = time_steps(step, states[name], batch, args.repeats)
            best[name] = min(best[name], seconds)
    rows = []
    for name, (_, _, _, flops, batch_size) in built.items():
        seconds = best[name]
        rows.append(
            {
                "setup": name,
                "batch": batch_size,
                "step_s": seconds,
                "examples_per_s": batch_size / seconds,
                "gflop_per_step": flops / 1e9,
                "mfu": flops / seconds / (peak * 1e9),
            }
        )
        print(
            f"{name}: {seconds:.3f} s/step, {batch_size / seconds:.1f} ex/s, "
            f"{flops / 1e9:.0f} GFLOP/step, MFU {rows[-1]['mfu']:.2f}",
            flush=True,
        )
    for row in rows:
        if "HET-XL" in row["setup"]:
            base = row["setup"].replace("HET-XL CLIP (S=16)", "CLIP").replace("HET-XL CLIP", "CLIP")
            if base in best:
                row["ratio_to_clip"] = row["step_s"] / best[base]
                print(f"{row['setup']}: {row['ratio_to_clip']:.3f}x the CLIP step", flush=True)
    write_result(args.out, peak, rows)


def write_result(path: str, peak: float, rows: list[dict]) -> None:
    """The JSON every benchmark here writes: date, machine, the run's matmul peak, rows."""
    import jax

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}",
        "matmul_peak_gflops": peak,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
