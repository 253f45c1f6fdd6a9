"""The compiled CPU kernels' library: its build at first use, its cache, and the switches.

One shared library holds every XLA:CPU kernel of the towers (`SOURCES`: attention in
towers/cpu_attention.cc, a dense layer's weight gradient in towers/cpu_dense.cc, LayerNorm in
towers/cpu_layer_norm.cc, and what they share in towers/cpu_kernels.h), each an XLA typed-FFI
handler registered under `TARGETS`.

The library is compiled at first use with the machine's C++ compiler (`$CXX`, else c++, g++ or
clang++) against `jax.ffi.include_dir()`, once per source / compiler / CPU / jaxlib, into
`$HETCLIP_KERNEL_CACHE` (default `~/.cache/hetclip/kernels`). Where no compiler is found or the
build fails, a warning says why and `enabled()` is False for every kernel: the towers then run
XLA's ops, with the same values. Each kernel family also has its own switch (an environment
variable: `HETCLIP_CPU_ATTENTION`, `HETCLIP_CPU_DENSE`, `HETCLIP_CPU_LAYER_NORM`): 0 turns it
off, 1 on on any CPU; unset, LayerNorm and the weight gradient are on everywhere (the weight
gradient, without AVX-512, only at some shapes: towers/cpu_dense.py) and attention where the
CPU has AVX-512 (`tuned_cpu()`).

Why: the product tiles are sized per instruction set (towers/cpu_kernels.h: 6 rows by up to 6
vectors of 16 floats on AVX-512, 6 x 16 floats on AVX2). On a 2-core AMD EPYC Zen 3 (AVX2)
attention's forward + backward then ran 1.16-1.34x as fast as XLA's per-head attention alone,
but a whole tiny CLIP step with it ran 0.94x as fast as without; the weight gradient ran
1.15-1.47x XLA's product where F <= K, and the LayerNorm kernels 1.15-1.66x flax's
(BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp

HERE = Path(__file__).parent
SOURCES = (HERE / "cpu_attention.cc", HERE / "cpu_dense.cc", HERE / "cpu_layer_norm.cc")
HEADERS = (HERE / "cpu_kernels.h",)
CACHE = "HETCLIP_KERNEL_CACHE"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
# FFI targets: name -> exported handler symbol in the library.
TARGETS = {
    "hetclip_attention_forward": "HetclipAttentionForward",
    "hetclip_attention_forward_with_probs": "HetclipAttentionForwardWithProbs",
    "hetclip_attention_backward": "HetclipAttentionBackward",
    "hetclip_weight_gradient": "HetclipWeightGradient",
    "hetclip_layer_norm_forward": "HetclipLayerNormForward",
    "hetclip_layer_norm_backward": "HetclipLayerNormBackward",
}

_disabled = threading.local()
_prefix = threading.local()
# Under the "hetclip" logger, which the command line shows at INFO.
log = logging.getLogger("hetclip.kernels")


def compiler() -> str | None:
    """The C++ compiler the kernels are built with: $CXX, else the first of c++, g++, clang++."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None)


def cache_dir() -> Path:
    if os.environ.get(CACHE):
        return Path(os.environ[CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hetclip" / "kernels"


@functools.cache
def _cpu_features() -> str:
    """What -march=native compiles for: the CPU's feature flags (Linux), else its name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_path(cxx: str) -> Path:
    """Where the library built from the current sources with `cxx` for this CPU and jaxlib
    lives."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    digest = hashlib.sha256()
    texts = [source.read_text() for source in (*SOURCES, *HEADERS)]
    for part in (*texts, cxx, version, " ".join(FLAGS), _cpu_features()):
        digest.update(part.encode() + b"\0")
    digest.update(importlib.metadata.version("jaxlib").encode())
    return cache_dir() / f"cpu_kernels-{digest.hexdigest()[:16]}.so"


def build(cxx: str, path: Path, sources: tuple[Path, ...] = SOURCES) -> None:
    """Compiles the kernels (`sources`, with their headers beside them) into `path` (written
    under a temporary name, then renamed, so that processes building at once never load a
    half-written file). Raises RuntimeError with the compiler's message on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(handle)
    command = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", *map(str, sources), "-o", partial]
    log.info("compiling the CPU kernels (once per machine) into %s", path)
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
        os.replace(partial, path)
        log.info("compiled the CPU kernels in %.1f s", time.perf_counter() - start)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@functools.cache
def library() -> ctypes.CDLL | None:
    """Builds (once per machine) and loads the kernels and registers their FFI targets; None,
    with a warning that says why and what runs instead, where that is not possible."""
    cxx = compiler()
    if cxx is None:
        warnings.warn(
            "hetclip: no C++ compiler found (set CXX or install g++), so attention, dense "
            "weight gradients and LayerNorm on the CPU run as XLA ops, which is slower; results "
            "are the same.",
            stacklevel=3,
        )
        return None
    try:
        path = library_path(cxx)
        if not path.exists():
            build(cxx, path)
        loaded = ctypes.cdll.LoadLibrary(str(path))
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"hetclip: the CPU kernels could not be built or loaded ({error}); attention, dense "
            "weight gradients and LayerNorm on the CPU run as XLA ops, which is slower; results "
            "are the same.",
            stacklevel=3,
        )
        return None
    register(loaded)
    return loaded


def register(loaded: ctypes.CDLL, prefix: str = "") -> None:
    """Registers a loaded kernel library's handlers as XLA:CPU FFI targets named prefix + each
    of `TARGETS` (a prefix lets a second build sit beside this one: benchmarks/kernel_ab.py)."""
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(
            prefix + target, jax.ffi.pycapsule(getattr(loaded, symbol)), platform="cpu"
        )


def float32_shapes(*shapes: tuple[int, ...]) -> tuple[jax.ShapeDtypeStruct, ...]:
    """The kernels' float32 results of these shapes, as ffi_call's result_shapes."""
    return tuple(jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes)


def mesh_axes(entry) -> tuple[str, ...]:
    """The mesh axes of one PartitionSpec entry (None, a name or a tuple of names)."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def ffi_call(target: str, result_shapes) -> Callable:
    """jax.ffi.ffi_call of one of `TARGETS`: this library's handler, or the one registered under
    the prefix of an open `calls_into` block on this thread."""
    return jax.ffi.ffi_call(getattr(_prefix, "value", "") + target, result_shapes)


@contextlib.contextmanager
def calls_into(prefix: str) -> Iterator[None]:
    """Kernel calls traced inside go to the handlers `register`ed under `prefix` (another build
    of the kernels). As with `disabled()`, only new traces are affected."""
    with _set_on_this_thread(_prefix, prefix, ""):
        yield


@contextlib.contextmanager
def _set_on_this_thread(local: threading.local, value, default) -> Iterator[None]:
    """`local.value` is `value` inside the block, as before it (else `default`) after."""
    before = getattr(local, "value", default)
    local.value = value
    try:
        yield
    finally:
        local.value = before


def tuned_cpu() -> bool:
    """Whether this CPU has what the kernels' tiles are sized for: AVX-512 (x86 `avx512f`)."""
    return "avx512f" in _cpu_features().split()


def forced(switch: str) -> bool:
    """Whether a kernel family's environment `switch` is 1: on, on any CPU, at any shape."""
    return os.environ.get(switch, "") == "1"


@functools.cache
def _untuned_cpu_notice(switch: str) -> None:
    log.info(
        "this CPU lacks AVX-512: the kernel behind %s runs as XLA ops (on AVX2 it made a step "
        "slower); %s=1 runs it anyway.",
        switch,
        switch,
    )


def enabled(switch: str, needs_avx512: bool = True) -> bool:
    """Whether a kernel family can run in this process: its environment `switch` is 1, or unset
    where the family does not need AVX-512 or the CPU is `tuned_cpu()`; no `disabled()` block
    is open on this thread; and the library is built and loaded."""
    if os.environ.get(switch, "") == "0" or getattr(_disabled, "value", False):
        return False
    if needs_avx512 and not forced(switch) and not tuned_cpu():
        _untuned_cpu_notice(switch)
        return False
    return library() is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Functions traced inside run XLA's ops instead of every kernel (e.g. to have XLA's cost
    analysis count the FLOPs, which it cannot see inside a custom call). Only new traces are
    affected: jit reuses its trace of a function object it has seen with the same argument
    shapes, so trace a new function (a fresh lambda or step) inside."""
    with _set_on_this_thread(_disabled, True, False):
        yield
