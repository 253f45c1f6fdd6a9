"""Two real JAX processes (jax.distributed on localhost, gloo CPU collectives) read disjoint
halves of each global batch, and the assembled global arrays equal the single-process stream."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from data_pipelines.input import InputPipeline
from data_pipelines.sources.tfrecord import TFRecordSource, example_to_bytes, write_indexed_tfrecord
from tests.helpers import image_bytes

WORKER = Path(__file__).with_name("multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_read_disjoint_shares_of_the_same_global_batches(tmp_path):
    records = [
        example_to_bytes(
            {"id": f"r{i}", "image": image_bytes(4, 4, seed=i), "texts": ["t"], "label": i}
        )
        for i in range(20)
    ]
    path = write_indexed_tfrecord(tmp_path / "r.tfrecord", records)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(port),
                str(i),
                str(path),
                str(tmp_path / f"out{i}.json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output[-3000:]
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [r["process_index"] for r in results] == [0, 1]

    single = InputPipeline(
        TFRecordSource(str(path)),
        "decode|resize(4)|keep('image', 'label')",
        global_batch_size=8,
        seed=5,
        process_index=0,
        process_count=1,
    )
    expected = [next(single.batches())["label"], next(single.batches(start_step=3))["label"]]
    for step in range(2):
        a, b = results[0]["local"][step], results[1]["local"][step]
        assert not set(a) & set(b)  # disjoint
        np.testing.assert_array_equal(a + b, expected[step])
        for r in results:  # the global array every process sees is the whole batch
            np.testing.assert_array_equal(r["global"][step], expected[step])
