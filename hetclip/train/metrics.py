"""Where training metrics go: metrics.jsonl and TensorBoard in the work directory, and a
progress line on the terminal (redrawn on a TTY, plain lines otherwise)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from data_pipelines.progress import Progress

SHOWN = ("loss", "logit_scale", "temperature", "img_noise_std")


def read_metrics(path: str | Path) -> list[dict]:
    """The complete lines of a metrics.jsonl; a last line still being written (no newline yet,
    e.g. read while the run is live) is left out rather than failing to parse."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


class MetricsWriter:
    """Appends {"step": s, ...} lines to workdir/metrics.jsonl and scalars to workdir/tensorboard.

    On resume, lines after `resume_step` (written by the run that was interrupted after its
    last checkpoint) are dropped, so the file reads as if the run had never stopped.
    Only the first process writes (`enabled`)."""

    def __init__(self, workdir: str | Path, *, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [m for m in read_metrics(self.path) if m["step"] <= resume_step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
        tmp.replace(self.path)
        try:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(str(Path(workdir) / "tensorboard"))
        except ImportError:  # TensorBoard logging is optional
            self._tb = None

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=step):
                for key, value in record.items():
                    if key != "step" and math.isfinite(value):
                        tf.summary.scalar(key, value)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def status_line(metrics: Mapping[str, float]) -> str:
    """'step 40 loss 3.2, logit_scale 14, 160 ex/s' from the last logged metrics."""
    shown = [f"{k} {float(metrics[k]):.4g}" for k in SHOWN if k in metrics]
    if "examples_per_s" in metrics:
        shown.append(f"{float(metrics['examples_per_s']):.0f} ex/s")
    return f"step {int(metrics.get('step', 0))}: " + ", ".join(shown)


def training_progress(total_steps: int, start_step: int) -> Progress:
    return Progress("train", total=total_steps - start_step)
