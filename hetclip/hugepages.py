"""Transparent huge pages for XLA:CPU's buffers: one re-execution of the `hetclip` command.

XLA:CPU allocates every executable's outputs and temporaries afresh on each call, through
glibc's malloc, which maps large blocks with mmap: each step then takes one page fault per 4 KiB
of buffer the first time it touches it. On the 2-core CI machine that cost more than the
arithmetic of memory-bound work (x + 1 over a [12608, 1536] float32 array: 21 ms with 18,913
page faults, 2.4 ms in place) and about a quarter of a tiny CLIP training step (BENCHMARKS.md).
glibc >= 2.35 asks the kernel for 2 MiB transparent huge pages for its mapped blocks when the
process starts with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (512x fewer faults). The tunable is
read only at process start, so the command re-executes itself once with it set. Set
HETCLIP_HUGEPAGES=0 to opt out; nothing happens where the kernel's THP mode is "never" or the
platform is not Linux.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_available(thp_mode_file: str = THP_MODE_FILE) -> bool:
    """Linux with transparent huge pages in "always" or "madvise" mode."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open(thp_mode_file) as f:
            mode = f.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def with_huge_pages(env: Mapping[str, str], available: bool | None = None) -> dict[str, str]:
    """A copy of `env` whose GLIBC_TUNABLES also holds TUNABLE (other tunables are kept), unless
    HETCLIP_HUGEPAGES=0, the tunable is already there, or huge pages are not available."""
    env = dict(env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if env.get("HETCLIP_HUGEPAGES") == "0" or "glibc.malloc.hugetlb" in tunables:
        return env
    if not (huge_pages_available() if available is None else available):
        return env
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec_with_huge_pages() -> None:
    """Replaces this process by the same command line with huge pages on (same pid, so signals
    and exit codes reach the caller as before); returns where nothing would change."""
    env = with_huge_pages(os.environ)
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
