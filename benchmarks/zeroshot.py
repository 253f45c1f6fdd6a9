"""Zero-shot evaluation throughput: class embeddings (and their cache) and a full image pass.

  python benchmarks/zeroshot.py [--images 1024] [--config default.py] [--out results.json]

1. Class embeddings of the 1,000 ImageNet classes x CLIP's 80 templates (80,000 prompts) with
   the config's text tower: the first call encodes them, the second reads the cache.
2. A full zero-shot pass (hetclip.train.evaluators.zero_shot, exactly what `hetclip eval`
   runs) over an image folder of JPEGs written here: read, decode, resize, image tower,
   logits, metrics (and HET-XL MC averaging when the model has image noise). Its images/s is
   compared with the image tower alone on the same, already decoded batches in the same run
   (the share of time the pipeline and metrics add), and the tower's FLOPs (XLA's count) give
   its fraction of the float32 matmul peak measured at the start of the run.
Parameters are freshly initialised: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.train_step import matmul_peak_gflops, write_result  # noqa: E402


def write_folder(root: Path, num_images: int, num_classes: int = 10, size: int = 96) -> None:
    """num_images random JPEGs in num_classes class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(num_images):
        folder = root / f"class_{index % num_classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        (folder / f"{index:05d}.jpg").write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default.py")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "zeroshot.json"))
    args = parser.parse_args()

    import jax

    from evals.zeroshot import class_embeddings
    from hetclip.config import load_config
    from hetclip.models import build_model
    from hetclip.sharding import make_mesh
    from hetclip.train.evaluators import CLASS_SETS, TEMPLATE_SETS, Embedder, zero_shot
    from towers import cpu_kernels

    peak = matmul_peak_gflops()
    print(f"matmul peak (float32): {peak:.0f} GFLOP/s", flush=True)
    config = load_config(args.config)
    config.input.batch_size = args.batch
    model = build_model(config.model)
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    work = Path(tempfile.mkdtemp(prefix="zeroshot-bench-"))
    embedder = Embedder(model, config, mesh, class_cache=(work / "cache", "bench"))
    write_folder(work / "images", args.images)
    spec = {"kind": "zeroshot", "data": {"kind": "folder", "root": str(work / "images")}}
    spec |= {"classes": "imagenet", "templates": "imagenet"}  # 1,000 classes, cached below
    pipeline = embedder.pipeline(data=spec["data"], pp=f"{_image_pp(config)}|keep('image')")
    batches = [b["image"] for b in pipeline.eval_batches()]

    tokens = embedder.tokenize(["a"])
    example = {"image": batches[0][:1], "text": tokens}
    params = jax.jit(model.init)(jax.random.PRNGKey(0), example)["params"]
    rows = []

    names, templates = CLASS_SETS["imagenet"](), TEMPLATE_SETS["imagenet"]()
    for attempt in ("encode", "cached"):
        start = time.perf_counter()
        class_embeddings(
            lambda prompts: embedder.texts(params, prompts),
            names,
            templates,
            cache_dir=work / "cache",
            model_id="bench",
        )
        seconds = time.perf_counter() - start
        prompts = len(names) * len(templates)
        rows.append(
            {"setup": f"class embeddings, 1000 x 80 prompts ({attempt})", "seconds": seconds}
            | ({"prompts_per_s": prompts / seconds} if attempt == "encode" else {})
        )
        print(rows[-1], flush=True)

    zero_shot(embedder, params, spec, None)  # compile and warm up
    start = time.perf_counter()
    zero_shot(embedder, params, spec, None)
    seconds = time.perf_counter() - start

    # The image tower alone on the same decoded batches.
    apply = jax.jit(lambda p, x: model.apply({"params": p}, {"image": x}))
    jax.block_until_ready(apply(params, batches[0]))
    with cpu_kernels.disabled():  # XLA counts no FLOPs inside the kernels' custom calls
        counted = jax.jit(lambda p, x: model.apply({"params": p}, {"image": x}))
        cost = counted.lower(params, batches[0]).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    tower_start = time.perf_counter()
    for images in batches:
        jax.block_until_ready(apply(params, images))
    tower_seconds = time.perf_counter() - tower_start
    tower_flops = float(cost["flops"]) * len(batches)
    rows.append(
        {
            "setup": f"full zero-shot pass, {args.images} JPEGs, 1000 classes",
            "seconds": seconds,
            "images_per_s": args.images / seconds,
            "tower_only_images_per_s": len(batches) * args.batch / tower_seconds,
            "ratio_to_tower_only": (args.images / seconds)
            / (len(batches) * args.batch / tower_seconds),
            "tower_fraction_of_peak": tower_flops / tower_seconds / (peak * 1e9),
        }
    )
    print(rows[-1], flush=True)
    write_result(args.out, peak, rows)


def _image_pp(config) -> str:
    from data_pipelines.ops import image_part

    return image_part(config.input.pp_eval)


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    main()
