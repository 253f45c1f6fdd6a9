"""Examples/s of the default image-text input pipeline on this machine.

Measures, in one run and alternately (this machine is noisy):
  ours       InputPipeline over the prepared shards: random access by global position,
             (seed, step)-deterministic, the default config's training pp string
  baseline   a plain streaming tf.data pipeline over the same TFRecord files with the same pp
             (TFRecordDataset -> shuffle -> parse -> pp -> batch): what a user would write by hand
and prints the rates and their ratio as JSON and as a Markdown row for BENCHMARKS.md.

  HETCLIP_DATA_DIR=data python benchmarks/data_throughput.py [--batches 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(iterator, batches: int, batch_size: int) -> float:
    next(iterator)  # first batch pays for graph building and buffer filling
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default.py")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import tensorflow as tf

    from data_pipelines import ops
    from data_pipelines.input import pipeline_from_config
    from data_pipelines.paths import data_dir
    from data_pipelines.sources.tfrecord import parse_example
    from hetclip.config import load_config

    config = load_config(args.config)
    ours = pipeline_from_config(config.input, process_index=0, process_count=1)
    batch_size = ours.local_batch_size
    pp = ops.build(config.input.pp, ours.pp_defaults)

    def baseline():
        ds = tf.data.TFRecordDataset(ours.source.files, num_parallel_reads=tf.data.AUTOTUNE)
        ds = (
            ds.repeat()
            .shuffle(10_000, seed=0)
            .map(lambda s: pp(parse_example(s)), num_parallel_calls=tf.data.AUTOTUNE)
        )
        return ds.batch(batch_size, drop_remainder=True).prefetch(2).as_numpy_iterator()

    rates = {"ours": [], "baseline": []}
    for _ in range(args.rounds):
        rates["ours"].append(_rate(ours.batches(), args.batches, batch_size))
        rates["baseline"].append(_rate(baseline(), args.batches, batch_size))
    best = {k: max(v) for k, v in rates.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "data_throughput",
        "config": args.config,
        "pp": config.input.pp,
        "batch_size": batch_size,
        "records": len(ours.source),
        "data_dir": str(data_dir()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "examples_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "best_examples_per_s": {k: round(v, 1) for k, v in best.items()},
        "median_examples_per_s": {k: round(v, 1) for k, v in median.items()},
        "ours_over_baseline_best": round(best["ours"] / best["baseline"], 3),
        "ours_over_baseline_median": round(median["ours"] / median["baseline"], 3),
        "skipped": ours.skips.counts,
    }
    print(json.dumps(result, indent=2))
    print(
        f"| {time.strftime('%Y-%m-%d')} | {result['machine']} | {batch_size} | "
        f"{median['ours']:.0f} | {median['baseline']:.0f} | "
        f"{result['ours_over_baseline_median']:.2f} | {result['ours_over_baseline_best']:.2f} |"
    )


if __name__ == "__main__":
    from hetclip import allocator  # as the hetclip command runs (HETCLIP_HUGEPAGES=0: without)

    allocator.reexec_with_allocator()
    main()
