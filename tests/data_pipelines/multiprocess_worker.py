"""One process of the two-process input test (run by test_multiprocess.py, not by pytest).

Usage: python multiprocess_worker.py PORT PROCESS_ID TFRECORD OUT_JSON
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402


def main(port: str, process_id: str, tfrecord: str, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))
    from data_pipelines.input import InputPipeline
    from data_pipelines.sources.tfrecord import TFRecordSource
    from hetclip.sharding import global_batch, make_mesh

    # process_index / process_count come from jax.distributed here.
    pipeline = InputPipeline(
        TFRecordSource(tfrecord),
        "decode|resize(4)|keep('image', 'label')",
        global_batch_size=8,
        seed=5,
    )
    mesh = make_mesh({"data": -1})
    result = {"process_index": pipeline.process_index, "local": [], "global": []}
    for local in (next(pipeline.batches()), next(pipeline.batches(start_step=3))):
        batch = global_batch(local, mesh)
        result["local"].append(local["label"].tolist())
        gathered = multihost_utils.process_allgather(batch["label"], tiled=True)
        result["global"].append(np.asarray(gathered).tolist())
    with open(out, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
