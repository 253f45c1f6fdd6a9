"""How XLA:CPU's buffers are allocated: tcmalloc preloaded, else glibc with transparent huge
pages; one re-execution of the `hetclip` command (and of the benchmark scripts) sets it up.

XLA:CPU allocates every executable's outputs and temporaries afresh on each call. Through
glibc's malloc, large blocks are mapped with mmap and unmapped when freed, so each step takes a
page fault, and the kernel zeroes a fresh page, for every page of buffer it touches. With 4 KiB
pages that cost more than the arithmetic of memory-bound work on the 2-core CI machine (x + 1
over a [12608, 1536] float32 array: 21 ms with 18,913 page faults, 2.4 ms in place) and about a
quarter of a tiny CLIP training step. glibc >= 2.35 asks for 2 MiB transparent huge pages when
the process starts with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (512x fewer faults), but the
zeroing stays: 0.4 s of system time per tiny CLIP step and 2.7 s per ViT-S/16 step on a 2-core
Zen 4 (BENCHMARKS.md).

tcmalloc (gperftools' libtcmalloc_minimal, BSD-licensed) keeps freed pages and hands them to
the next allocation, so steady-state steps take no faults at all (ViT-S/16 CLIP steps 1.13x
faster there). The price: the process keeps its high-water mark of memory (tcmalloc returns
free pages to the system only slowly). That mark would reach twice a step's temporaries where
two steps' temporary blocks are ever alive at once: dispatched asynchronously, XLA:CPU frees a
step's block on its own thread a little after the step's outputs are ready, and the next step,
dispatched as soon as they are, can allocate its block first (ViT-S/16 CLIP at batch 64 then
kept 15.9 GB instead of 9 GB). So with tcmalloc preloaded, reexec_with_allocator also turns
JAX's asynchronous CPU dispatch off (unless HETCLIP_CPU_ASYNC_DISPATCH=1): a single-device
computation whose inputs are ready then runs inline and frees its temporaries before it returns
(the training loop waits for its inputs for this). `run.py` puts
a copy from Debian's libtcmalloc-minimal4 package in the virtual environment; a system copy
works as well. HETCLIP_TCMALLOC=0 turns it off (glibc with huge pages instead), or names the
library to use; HETCLIP_HUGEPAGES=0 turns the huge pages off. The settings are read only at
process start, so the command re-executes itself once with them; nothing happens off Linux.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
TCMALLOC = "libtcmalloc_minimal.so.4"
# Where run.py puts its copy, under the virtual environment's prefix.
TCMALLOC_DIR = ("lib", "hetclip-tcmalloc")
# 1 keeps JAX's asynchronous CPU dispatch with tcmalloc (the docstring says why it is off).
ASYNC_DISPATCH_SWITCH = "HETCLIP_CPU_ASYNC_DISPATCH"
SYSTEM_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64")


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


def find_tcmalloc(env: Mapping[str, str], prefix: str = sys.prefix) -> str | None:
    """The tcmalloc library to preload: $HETCLIP_TCMALLOC where it names a file (None where it
    is 0), else run.py's copy under `prefix`, else the system's; None off Linux."""
    choice = env.get("HETCLIP_TCMALLOC", "")
    if choice == "0" or not sys.platform.startswith("linux"):
        return None
    candidates = [Path(choice)] if choice else []
    candidates.append(Path(prefix, *TCMALLOC_DIR, TCMALLOC))
    candidates += [Path(directory, TCMALLOC) for directory in SYSTEM_LIBRARY_DIRS]
    return next((str(path) for path in candidates if path.is_file()), None)


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


def allocator_env(env: Mapping[str, str], tcmalloc: str | None = None) -> dict[str, str]:
    """A copy of `env` that preloads `tcmalloc` (a library path; LD_PRELOAD's other entries are
    kept) where one is given and not preloaded yet, else `with_huge_pages(env)`."""
    env = dict(env)
    if tcmalloc is None:
        return with_huge_pages(env)
    if not tcmalloc_preloaded(env):
        env["LD_PRELOAD"] = ":".join([*_preloads(env), tcmalloc])
    return env


def _preloads(env: Mapping[str, str]) -> list[str]:
    return [entry for entry in env.get("LD_PRELOAD", "").split(":") if entry]


def tcmalloc_preloaded(env: Mapping[str, str]) -> bool:
    return any(Path(entry).name.startswith("libtcmalloc") for entry in _preloads(env))


def inline_cpu_dispatch(env: Mapping[str, str] = os.environ) -> bool:
    """Turns JAX's asynchronous CPU dispatch off where tcmalloc is preloaded in `env` and
    ASYNC_DISPATCH_SWITCH is not 1; returns whether it did. Works only before JAX's CPU client
    exists (its first computation or device query)."""
    if not tcmalloc_preloaded(env) or env.get(ASYNC_DISPATCH_SWITCH) == "1":
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True


def reexec_with_allocator() -> None:
    """Replaces this process by the same command line with the allocator above set up (same
    pid, so signals and exit codes reach the caller as before). Where nothing would change,
    returns, having turned asynchronous CPU dispatch off where inline_cpu_dispatch says so
    (call this before any JAX computation)."""
    env = allocator_env(os.environ, find_tcmalloc(os.environ))
    if all(env.get(k) == os.environ.get(k) for k in ("GLIBC_TUNABLES", "LD_PRELOAD")):
        inline_cpu_dispatch()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
