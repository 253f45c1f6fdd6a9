"""Full training-step time and model FLOPs utilisation (MFU) on this machine.

  python benchmarks/train_step.py [--repeats 3] [--only tiny] [--out results.json]

One step = towers forward + loss + backward + AdamW update (hetclip.train.step.make_train_step,
jitted, on a one-device mesh) on synthetic batches held on the device, so the input pipeline is not
measured here (see data_throughput.py). FLOPs are XLA's count of the lowered step (cost_analysis, of
the step traced with XLA's attention: XLA cannot see inside the CPU attention kernel's custom
calls), which includes everything the step computes (where XLA gives none, on a GPU,
two_tower_train_flops: matmuls only, 3x the forward); MFU = FLOPs / step time / the matmul peak
measured at the start of the same run (jit(jnp.dot): float32 at 2048^3 on the CPU; bfloat16 at
8192^3 for the GPU rows, which run only with --only GPU). The HET-XL rows are reported as a ratio to
the deterministic CLIP step of the same towers, measured alternately in the same run.
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

# XLA's cost analysis counts a scanned layer stack's body once, so FLOP counts need the layers
# unrolled; remat is off because a batch of 256 fits on one GPU without it.
NO_REMAT_UNROLLED = {
    f"model.{tower}.{option}": False for tower in ("image", "text") for option in ("remat", "scan")
}

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
    # Run only with --only GPU, on a CUDA machine: clip_vit_b16.py (bfloat16).
    "GPU ViT-B/16 CLIP bfloat16 224px, batch 256": (
        "clip_vit_b16.py:hetxl=False,batch=256",
        NO_REMAT_UNROLLED,
        224,
        64,
    ),
    "GPU ViT-B/16 HET-XL CLIP bfloat16 224px, batch 256": (
        "clip_vit_b16.py:hetxl=True,batch=256",
        NO_REMAT_UNROLLED,
        224,
        64,
    ),
}


def on_gpu(setup: str) -> bool:
    """GPU setups (named "GPU ...") run only when asked for by --only."""
    return setup.startswith("GPU")


def selected(setups, only: str | None) -> list[str]:
    """Names of `setups` containing `only`; without it, every CPU setup."""
    return [name for name in setups if (only in name if only else not on_gpu(name))]


def measured_peak(gpu: bool) -> tuple[float, str]:
    """(GFLOP/s, dtype) of this run's matmul peak: bfloat16 8192^3 products on a GPU, float32
    2048^3 ones on the CPU (best of 10 / 20)."""
    size, dtype = (8192, "bfloat16") if gpu else (2048, "float32")
    return matmul_peak_gflops(size=size, dtype=dtype, repeats=10 if gpu else 20), dtype


def matmul_peak_gflops(**options) -> float:
    """heads.matmul_peak_gflops (size, repeats, dtype options)."""
    spec = importlib.util.spec_from_file_location("heads_benchmark", os.path.join(HERE, "heads.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.matmul_peak_gflops(**options)


def transformer_flops(width: int, depth: int, mlp_dim: int, tokens: int) -> float:
    """Forward matmul FLOPs of one example through a pre-LN transformer encoder: q, k, v, out
    (4 w^2) and MLP (2 w m) per token, and the [T, T] scores and their product with v."""
    return (
        2.0 * tokens * depth * (4 * width**2 + 2 * width * mlp_dim)
        + 4.0 * depth * tokens**2 * width
    )


def two_tower_train_flops(model: dict, res: int, text_len: int, batch: int) -> float:
    """Model FLOPs of a contrastive training step (3x the forward: Kaplan et al. 2020's count),
    matmuls only: image and text encoders, patch embedding and the two projections. Used where
    XLA gives no count; within 1% of XLA's CPU count for the ViT-B/16 and ViT-S/16 steps."""
    from towers.vit import VIT_SIZES, parse_variant

    image_size, (patch, _) = parse_variant(model["image"]["variant"])
    patches = (res // patch) ** 2
    text = model["text"]
    size = VIT_SIZES[text["variant"]]
    width, depth = text.get("width") or size.width, text.get("depth") or size.depth
    mlp_dim = text.get("mlp_dim") or size.mlp_dim
    forward = (
        transformer_flops(image_size.width, image_size.depth, image_size.mlp_dim, patches + 1)
        + 2.0 * patches * patch**2 * 3 * image_size.width
        + transformer_flops(width, depth, mlp_dim, text_len)
        + 2.0 * (image_size.width + width) * model["embed_dim"]
    )
    return 3 * forward * batch


def setup_config(spec: str, overrides: dict):
    """The config of a spec with {"a.b.c": value} overrides."""
    from hetclip.config import load_config

    config = load_config(spec)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def synthetic_batch(config, res: int, text_len: int) -> dict:
    """{"image": [B, res, res, 3] float32, "text": [B, text_len] int32} at the config's batch."""
    import numpy as np

    batch_size = int(config.input.batch_size)
    rng = np.random.default_rng(0)
    return {
        "image": rng.uniform(-1, 1, (batch_size, res, res, 3)).astype(np.float32),
        "text": rng.integers(1, config.model.text.vocab_size, (batch_size, text_len)).astype(
            np.int32
        ),
    }


def xla_flops(new_jitted, *args) -> float | None:
    """XLA's FLOP count of `new_jitted()` (a fresh jitted function) lowered for args, traced with
    the CPU kernels off: XLA counts no FLOPs inside their custom calls. None where the backend
    gives no count (a GPU)."""
    from towers import cpu_kernels

    with cpu_kernels.disabled():
        cost = new_jitted().lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) if cost else None


def build_step(spec: str, overrides: dict, res: int, text_len: int):
    """(jitted step, state, synthetic batch, XLA FLOPs per step, batch size) for a config spec
    with {"a.b.c": value} overrides."""
    import jax

    from hetclip.models import build_model
    from hetclip.sharding import make_mesh
    from hetclip.train import optim
    from hetclip.train.objectives import make_objective
    from hetclip.train.step import init_params, init_state, make_train_step

    config = setup_config(spec, overrides)
    batch_size = int(config.input.batch_size)
    batch = synthetic_batch(config, res, text_len)
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    model = build_model(config.model)
    params, shardings = init_params(model, batch, 0, mesh)
    lr = optim.schedule(config.schedule, int(config.total_steps))
    tx = optim.optimizer(config.optim, lr, params)
    state, state_shardings = init_state(tx, params, shardings, mesh)

    def new_step():
        objective = make_objective(model, config, mesh)
        return make_train_step(objective, tx, lr, seed=0, mesh=mesh, shardings=state_shardings)

    step = new_step()
    # Count before XLA's rewrites: a compiled GPU module's matmuls are cuBLAS custom calls,
    # which its cost analysis does not count (on the CPU the two counts agree within 1%). Nor
    # does it see inside the CPU kernels' custom calls, so the count is of the same step traced
    # with XLA's attention and products.
    flops = xla_flops(new_step, state, batch) or two_tower_train_flops(
        config.model, res, text_len, batch_size
    )
    # Keep the synthetic batch on the device, as a prefetching input pipeline does.
    batch = jax.device_put(batch, jax.devices()[0])
    return step, state, batch, flops, batch_size


def time_steps(step, state, batch, repeats: int):
    import jax

    # Ready inputs: every step runs inline (hetclip/allocator.py), none overlaps another's memory.
    jax.block_until_ready((state, batch))
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
    names = selected(SETUPS, args.only)
    gpu = any(on_gpu(name) for name in names)
    peak, dtype = measured_peak(gpu)
    print(f"matmul peak ({dtype}, jit(jnp.dot)): {peak:.0f} GFLOP/s", flush=True)
    built = {name: build_step(*SETUPS[name]) for name in names}
    best = {name: float("inf") for name in built}
    states = {name: b[1] for name, b in built.items()}
    repeats = args.repeats * (10 if gpu else 1)  # GPU steps are short: time more of them
    for _ in range(args.rounds):  # alternate so machine noise hits every setup alike
        for name, (step, _, batch, _, _) in built.items():
            states[name], seconds = time_steps(step, states[name], batch, repeats)
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
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    main()
