"""Two real processes (jax.distributed on localhost, gloo CPU collectives), one device each,
train the same steps as one process with two devices: same losses, same parameters."""

import socket
import subprocess

import numpy as np
import pytest

from hetclip.train.metrics import read_metrics
from tests.hetclip.train import test_resume_kill as resume_kill
from tests.hetclip.train.test_resume_kill import _env

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(workdir, *extra):
    return resume_kill._command(workdir, *extra, steps=STEPS)


@pytest.mark.slow
def test_two_process_training_equals_one_process_with_two_devices(prepared_imagetext, tmp_path):
    env = _env(prepared_imagetext.parent)
    single = subprocess.run(_command(tmp_path / "single"), env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]

    one_device = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    port = _free_port()
    workers = [
        subprocess.Popen(
            _command(
                tmp_path / "multi",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--coordinator",
                f"localhost:{port}",
            ),
            env=one_device,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=400)
        assert worker.returncode == 0, output[-3000:]

    multi = read_metrics(tmp_path / "multi" / "metrics.jsonl")
    expected = read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [m["step"] for m in multi] == [1, 2, 3]
    for have, want in zip(multi, expected, strict=True):
        np.testing.assert_allclose(have["loss"], want["loss"], rtol=1e-5)
        np.testing.assert_allclose(have["grad_norm"], want["grad_norm"], rtol=1e-4)
    import jax

    from hetclip.train.checkpoint import read_checkpoint

    single_params = read_checkpoint(tmp_path / "single" / "checkpoints", STEPS)["params"]
    multi_params = read_checkpoint(tmp_path / "multi" / "checkpoints", STEPS)["params"]
    for x, y in zip(jax.tree.leaves(single_params), jax.tree.leaves(multi_params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
