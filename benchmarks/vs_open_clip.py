"""hetclip vs open_clip: full CLIP training steps of the same architecture, timed alternately.

  python -m venv /tmp/bench && /tmp/bench/bin/pip install torch==2.13.0 open_clip_torch
  python benchmarks/vs_open_clip.py --torch-python /tmp/bench/bin/python [--rounds 2]
  python benchmarks/vs_open_clip.py --torch-python python3 --only GPU     (on a CUDA machine)
  ... --torch-compile                      (open_clip compiled, as its --torchcompile does)
  ... --part image                         (one tower's forward + backward only: image or text)

torch and open_clip live in a separate, benchmark-only environment (never a dependency of
hetclip). This script runs the JAX side itself and drives a worker process in that environment
(this same file with --worker); each round times a few steps of open_clip, then of hetclip, so
machine noise hits both alike. A step is forward, CLIP loss, backward and AdamW on both sides,
on synthetic batches, 2 threads for torch on the CPU. FLOPs are XLA's count of hetclip's
lowered step (the architectures match layer for layer; open_clip's text tower is causal, which
changes no FLOP count), and MFU is against the matmul peak (float32 at 2048^3 on the CPU;
bfloat16 at 8192^3 on a GPU, where both sides compute in bfloat16 with float32 parameters:
open_clip's `--precision amp_bf16`, hetclip's dtype "bfloat16"), measured at the start of the run
and again before every round, the highest so far kept: on a noisy machine a single early
measurement can come out low and inflate both MFUs (`peaks_gflops` in the result lists them).
--part image / text times one tower alone instead, to find where a step's gap lies: its forward
to the unit-norm embedding and the backward of sum(embedding * fixed random [B, D]) to its
parameters, no loss over the batch and no optimizer; FLOPs are XLA's count of that computation.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CPU_SPEC = "default.py:hetxl=False,res={size},batch={batch}"

# name: (open_clip model config, hetclip overrides of the config, image size, context, batch)
SETUPS = {
    "ViT w192 d12 p8 @64px + text w256 d6, batch 256": (
        {
            "embed_dim": 256,
            "vision_cfg": {
                "image_size": 64,
                "layers": 12,
                "width": 192,
                "patch_size": 8,
                "head_width": 64,
            },
            "text_cfg": {
                "context_length": 32,
                "vocab_size": 32000,
                "width": 256,
                "heads": 4,
                "layers": 6,
            },
        },
        {
            "model.image.variant": "Ti/8",
            "model.image.pool": "tok",
            "model.embed_dim": 256,
            "model.text.variant": "Ti",
            "model.text.width": 256,
            "model.text.depth": 6,
            "model.text.mlp_dim": 1024,
            "model.text.num_heads": 4,
            "model.text.vocab_size": 32000,
        },
        64,
        32,
        256,
    ),
    "ViT-S/16 @224px + text w384 d12, batch 64": (
        {
            "embed_dim": 384,
            "vision_cfg": {
                "image_size": 224,
                "layers": 12,
                "width": 384,
                "patch_size": 16,
                "head_width": 64,
            },
            "text_cfg": {
                "context_length": 32,
                "vocab_size": 32000,
                "width": 384,
                "heads": 6,
                "layers": 12,
            },
        },
        {
            "model.image.variant": "S/16",
            "model.image.pool": "tok",
            "model.embed_dim": 384,
            "model.text.variant": "S",
            "model.text.vocab_size": 32000,
        },
        224,
        32,
        64,
    ),
    # open_clip's ViT-B-16; hetclip's clip_vit_b16.py, unrolled, without remat.
    "GPU ViT-B/16 @224px + text w512 d12 ctx 77, batch 256, bfloat16": (
        {
            "embed_dim": 512,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 512,
                "heads": 8,
                "layers": 12,
            },
        },
        None,  # train_step.NO_REMAT_UNROLLED, filled in by main()
        224,
        77,
        256,
    ),
}
GPU_SPEC = "clip_vit_b16.py:batch={batch},vocab=49408"


# --- torch worker (runs in the benchmark venv; imports no JAX) ----------------------------------


def worker(name: str, compile_model: bool, part: str = "step") -> None:
    import types

    # The registry's torchvision wheel does not match the CPU torch build on disk; open_clip
    # needs torchvision only for image transforms, which a step on tensors never uses. Skip
    # torchvision's detection-op registrations (the part that fails) instead of the package.
    sys.modules.setdefault(
        "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
    )
    import contextlib

    import open_clip
    import torch

    model_config, _, size, context, batch = SETUPS[name]
    device = "cuda" if _load("train_step").on_gpu(name) else "cpu"
    if device == "cpu":
        torch.set_num_threads(2)
    model = open_clip.model.CLIP(**model_config).to(device)
    if compile_model:  # as open_clip's --torchcompile does
        model = torch.compile(model)
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    texts = torch.randint(1, 32000, (batch, context), device=device)
    params = sum(p.numel() for p in model.parameters())
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if device == "cuda"
        else contextlib.nullcontext
    )
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def training_step():
        with autocast():
            image_features, text_features, logit_scale = model(images, texts)[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize()

    if part != "step":
        encode = {
            "image": lambda: model.encode_image(images, normalize=True),
            "text": lambda: model.encode_text(texts, normalize=True),
        }[part]
        target = torch.randn(batch, model_config["embed_dim"], device=device)

        def tower_step():
            with autocast():
                loss = (encode().float() * target).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            synchronize()

    step = training_step if part == "step" else tower_step

    step()
    step()
    if part != "step":  # the tower's parameters: those its backward reached
        params = sum(p.numel() for p in model.parameters() if p.grad is not None)
    print(
        json.dumps(
            {
                "ready": True,
                "params": params,
                "version": open_clip.__version__,
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(json.dumps({"best_s": min(times), "median_s": statistics.median(times)}), flush=True)


# --- JAX side -------------------------------------------------------------------------------


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_hetclip_step(name: str):
    """train_step.build_step's (step, state, batch, FLOPs, batch size) for hetclip's side of
    the setup `name`."""
    train_step = _load("train_step")
    _, overrides, size, context, batch = SETUPS[name]
    overrides = train_step.NO_REMAT_UNROLLED if overrides is None else overrides
    spec = (GPU_SPEC if train_step.on_gpu(name) else CPU_SPEC).format(size=size, batch=batch)
    return train_step.build_step(spec, overrides, size, context)


def build_hetclip_part(name: str, part: str):
    """build_hetclip_step's tuple for one tower of the setup `name` ("image" or "text"): its
    forward to the unit-norm embedding and the gradient of sum(embedding * fixed random [B, D])
    by its parameters, as a step(params, inputs) -> (params, gradients) for time_steps."""
    import jax
    import jax.numpy as jnp

    from hetclip.models import build_model

    train_step = _load("train_step")
    _, overrides, size, context, batch = SETUPS[name]
    config = train_step.setup_config(CPU_SPEC.format(size=size, batch=batch), overrides)
    model = build_model(config.model)
    inputs = {part: train_step.synthetic_batch(config, size, context)[part]}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)
    target = jax.random.normal(jax.random.PRNGKey(1), (batch, int(config.model.embed_dim)))
    output = {"image": "zimg", "text": "ztxt"}[part]

    def loss(params, inputs):
        return jnp.sum(model.apply(params, inputs, train=True)[output] * target)

    def new_gradient():
        return jax.jit(jax.grad(loss))

    gradient = new_gradient()
    flops = train_step.xla_flops(new_gradient, params, inputs)
    return (lambda params, inputs: (params, gradient(params, inputs))), params, inputs, flops, batch


def build_any_step(only: str) -> tuple:
    """(setup name, build_step's tuple) for the first train_step.py setup whose name contains
    `only`, else hetclip's side of the first such setup here."""
    train_step = _load("train_step")
    names = train_step.selected(train_step.SETUPS, only) or train_step.selected(SETUPS, only)
    if not names:
        raise SystemExit(f"no setup of train_step.py or vs_open_clip.py contains {only!r}")
    name = names[0]
    if name in train_step.SETUPS:
        return name, train_step.build_step(*train_step.SETUPS[name])
    return name, build_hetclip_step(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", required=True, help="python of the torch venv")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and side")
    parser.add_argument("--only", help="run only setups whose name contains this")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "vs_open_clip.json"))
    parser.add_argument(
        "--torch-compile", action="store_true", help="open_clip with torch.compile (--torchcompile)"
    )
    parser.add_argument(
        "--part", default="step", choices=["step", "image", "text"], help="time one tower only"
    )
    args = parser.parse_args()
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    import jax
    import numpy as np

    train_step = _load("train_step")
    names = train_step.selected(SETUPS, args.only)
    gpu = any(train_step.on_gpu(name) for name in names)
    peak, peak_dtype = train_step.measured_peak(gpu)
    print(f"matmul peak ({peak_dtype}): {peak:.0f} GFLOP/s", flush=True)
    peaks = [peak]  # re-measured before every round; MFUs use the highest
    rows = []
    for name in names:
        _, _, size, context, batch = SETUPS[name]
        if args.part == "step":
            step, state, inputs, flops, _ = build_hetclip_step(name)
            params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
        else:
            step, state, inputs, flops, _ = build_hetclip_part(name, args.part)
            params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
        torch_worker = subprocess.Popen(
            [args.torch_python, os.path.abspath(__file__), "--worker", name, "--part", args.part]
            + (["--compile"] if args.torch_compile else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        info = json.loads(torch_worker.stdout.readline())
        ours, theirs = float("inf"), float("inf")
        steps = args.steps * (10 if train_step.on_gpu(name) else 1)
        for _ in range(args.rounds):
            peaks.append(train_step.measured_peak(gpu)[0])
            torch_worker.stdin.write(f"{steps}\n")
            torch_worker.stdin.flush()
            theirs = min(theirs, json.loads(torch_worker.stdout.readline())["best_s"])
            state, seconds = train_step.time_steps(step, state, inputs, steps)
            ours = min(ours, seconds)
        torch_worker.stdin.close()
        torch_worker.wait()
        row = {
            "setup": name,
            "part": args.part,
            "batch": batch,
            "hetclip_params": params,
            "open_clip_params": info["params"],
            "hetclip_step_s": ours,
            "open_clip_step_s": theirs,
            "hetclip_images_per_s": batch / ours,
            "open_clip_images_per_s": batch / theirs,
            "speedup": theirs / ours,
            "gflop_per_step": flops / 1e9,
            "hetclip_mfu": flops / ours / (max(peaks) * 1e9),
            "open_clip_mfu": flops / theirs / (max(peaks) * 1e9),
            "peaks_gflops": [round(p, 1) for p in peaks],
            "open_clip_compiled": args.torch_compile,
            "open_clip_version": info["version"],
            "torch_version": info["torch"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"matmul peaks measured ({peak_dtype}): {', '.join(f'{p:.0f}' for p in peaks)} GFLOP/s")
    train_step.write_result(args.out, max(peaks), rows)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        options = sys.argv[3:]
        part = options[options.index("--part") + 1] if "--part" in options else "step"
        worker(sys.argv[2], "--compile" in options, part)
    else:
        from hetclip import allocator  # both sides inherit it (HETCLIP_HUGEPAGES=0: neither)

        allocator.reexec_with_allocator()
        main()
