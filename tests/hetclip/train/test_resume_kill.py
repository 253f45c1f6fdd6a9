"""A real `hetclip train` process killed with SIGKILL mid-run, then stopped with SIGTERM, then
resumed, ends with exactly the parameters and metrics of a run that never stopped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hetclip.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]
STEPS = 120
DETERMINISTIC = ("loss", "grad_norm", "param_norm", "learning_rate", "logit_scale", "img_noise_std")


def _command(workdir, *extra, steps=STEPS):
    return [
        sys.executable,
        "-m",
        "hetclip.cli",
        "train",
        "--config",
        f"default.py:size=mu,res=16,batch=8,steps={steps}",
        "--config.log_every=1",
        "--config.eval_every=0",
        "--config.checkpoint.every=10",
        "--workdir",
        str(workdir),
        *extra,
    ]


def _env(data_dir):
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HETCLIP_DATA_DIR": str(data_dir),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }


def _run_until(workdir, env, lines: int, sig: int) -> int:
    """Starts training, sends `sig` once metrics.jsonl has `lines` lines; returns the exit code."""
    process = subprocess.Popen(
        _command(workdir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(read_metrics(workdir / "metrics.jsonl")) >= lines:
            process.send_signal(sig)
            break
        time.sleep(0.02)
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0, f"the run ended before it could be interrupted: {err[-2000:]}"
    return process.returncode


def _final_params(workdir):
    from hetclip.train.checkpoint import read_checkpoint

    return read_checkpoint(workdir / "checkpoints", STEPS)["params"]


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_equals_an_uninterrupted_run(prepared_imagetext, tmp_path):
    env = _env(prepared_imagetext.parent)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(_command(straight), env=env, check=True, capture_output=True)

    assert _run_until(interrupted, env, 15, signal.SIGKILL) == -signal.SIGKILL
    # SIGTERM: the run saves the step it is at, then exits 128 + 15.
    assert _run_until(interrupted, env, 45, signal.SIGTERM) == 128 + signal.SIGTERM
    stopped_at = read_metrics(interrupted / "metrics.jsonl")[-1]["step"]
    assert (interrupted / "checkpoints" / str(stopped_at)).is_dir()
    subprocess.run(_command(interrupted), env=env, check=True, capture_output=True)

    expected, got = (
        read_metrics(straight / "metrics.jsonl"),
        read_metrics(interrupted / "metrics.jsonl"),
    )
    assert [m["step"] for m in got] == list(range(1, STEPS + 1))
    for want, have in zip(expected, got, strict=True):
        assert {k: have[k] for k in DETERMINISTIC} == {k: want[k] for k in DETERMINISTIC}
    import jax

    for a, b in zip(
        jax.tree.leaves(_final_params(straight)),
        jax.tree.leaves(_final_params(interrupted)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_read_metrics_leaves_out_a_line_still_being_written(tmp_path):
    from hetclip.train.metrics import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "grad_norm": ')
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]
