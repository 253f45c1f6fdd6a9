"""A dependency-free progress line for long data work: redrawn in place on a terminal, a plain
line every few seconds otherwise (CI logs stay readable)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, every_s: float = 5.0, stream=None):
        self.label, self.total, self.count = label, total, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.start = self._last = time.monotonic()
        self.status = ""

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(self.total - self.count, 0) / rate:.0f}s"
        status = f" {self.status}" if self.status else ""
        return f"[{self.label}] {done}{status} ({rate:.1f}/s, {elapsed:.0f}s{eta})"

    def update(self, n: int = 1, status: str | None = None) -> None:
        """Counts n more done; `status` (e.g. "loss 1.23") replaces the line's status text."""
        self.count += n
        if status is not None:
            self.status = status
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._write(self._line(), final=False)

    def _write(self, line: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, note: str = "") -> None:
        self._write(self._line() + (f" {note}" if note else ""), final=True)
