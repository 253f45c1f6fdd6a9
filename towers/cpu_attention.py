"""Multi-head attention on XLA:CPU as compiled kernels (towers/cpu_attention.cc).

softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1) for float32 q [B, Q, H, d] and k / v
[B, K, H, d], without bias or mask, forward and backward each one XLA typed-FFI custom call.
Why: XLA:CPU runs each of attention's small batched products on one thread; the kernel runs
every (example, head) pair's products from the core's caches and spreads the pairs over XLA's
intra-op threads (forward + backward 2.4x faster than `per_head_attention` at the tiny CLIP's
image attention on a 2-core Xeon; BENCHMARKS.md).

The kernel is compiled at first use with the machine's C++ compiler (`$CXX`, else c++, g++ or
clang++) against `jax.ffi.include_dir()`, once per source / compiler / CPU / jaxlib, into
`$HETCLIP_KERNEL_CACHE` (default `~/.cache/hetclip/kernels`). Where no compiler is found or the
build fails, a warning says why and `available()` is False: the towers then run XLA's
attention, with the same values. `HETCLIP_CPU_ATTENTION=0` turns the kernel off.

On a device mesh the calls are partitioned by `custom_partitioning`: batch and head axes keep
their sharding, the token and head-size axes are gathered (they are never sharded by the
towers' rules).
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
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

SOURCE = Path(__file__).with_name("cpu_attention.cc")
SWITCH = "HETCLIP_CPU_ATTENTION"
CACHE = "HETCLIP_KERNEL_CACHE"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
# FFI targets: name -> exported handler symbol in the library.
TARGETS = {
    "hetclip_attention_forward": "HetclipAttentionForward",
    "hetclip_attention_forward_with_probs": "HetclipAttentionForwardWithProbs",
    "hetclip_attention_backward": "HetclipAttentionBackward",
}

_disabled = threading.local()
# Under the "hetclip" logger, which the command line shows at INFO.
log = logging.getLogger("hetclip.kernels")


def compiler() -> str | None:
    """The C++ compiler the kernel is built with: $CXX, else the first of c++, g++, clang++."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None)


def cache_dir() -> Path:
    if os.environ.get(CACHE):
        return Path(os.environ[CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hetclip" / "kernels"


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
    """Where the library built from the current source with `cxx` for this CPU and jaxlib lives."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_text(), cxx, version, " ".join(FLAGS), _cpu_features()):
        digest.update(part.encode() + b"\0")
    digest.update(importlib.metadata.version("jaxlib").encode())
    return cache_dir() / f"cpu_attention-{digest.hexdigest()[:16]}.so"


def build(cxx: str, path: Path) -> None:
    """Compiles the kernel into `path` (written under a temporary name, then renamed, so that
    processes building at once never load a half-written file). Raises RuntimeError with the
    compiler's message on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(handle)
    command = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", partial]
    log.info("compiling the CPU attention kernel (once per machine) into %s", path)
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
        os.replace(partial, path)
        log.info("compiled the CPU attention kernel in %.1f s", time.perf_counter() - start)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """Builds (once per machine) and loads the kernel and registers its FFI targets; None, with
    a warning that says why and what runs instead, where that is not possible."""
    cxx = compiler()
    if cxx is None:
        warnings.warn(
            "hetclip: no C++ compiler found (set CXX or install g++), so attention on the CPU "
            "runs as XLA ops, which is slower; results are the same.",
            stacklevel=3,
        )
        return None
    try:
        path = library_path(cxx)
        if not path.exists():
            build(cxx, path)
        library = ctypes.cdll.LoadLibrary(str(path))
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"hetclip: the CPU attention kernel could not be built or loaded ({error}); "
            "attention on the CPU runs as XLA ops, which is slower; results are the same.",
            stacklevel=3,
        )
        return None
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(
            target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
        )
    return library


def available() -> bool:
    """Whether the kernel can run in this process (not switched off, built and loaded)."""
    if os.environ.get(SWITCH, "1") == "0" or getattr(_disabled, "value", False):
        return False
    return _library() is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Functions traced inside run XLA's attention instead (e.g. to have XLA's cost analysis
    count attention's FLOPs, which it cannot see inside a custom call). Only new traces are
    affected: jit reuses its trace of a function object it has seen with the same argument
    shapes, so trace a new function (a fresh lambda or step) inside."""
    before = getattr(_disabled, "value", False)
    _disabled.value = True
    try:
        yield
    finally:
        _disabled.value = before


def supports(query, key, value, bias=None, mask=None) -> bool:
    """The kernel's case: non-empty float32 [B, T, H, d] operands, no bias or mask, on the
    CPU."""
    return (
        bias is None
        and mask is None
        and all(x.ndim == 4 and x.dtype == jnp.float32 and x.size for x in (query, key, value))
        and jax.default_backend() == "cpu"
        and available()
    )


def _scale(query) -> np.float32:
    return np.float32(query.shape[-1] ** -0.5)


def _shapes(*arrays_and_shapes) -> tuple[jax.ShapeDtypeStruct, ...]:
    return tuple(jax.ShapeDtypeStruct(shape, jnp.float32) for shape in arrays_and_shapes)


def _probs_shape(query, key) -> tuple[int, int, int, int]:
    batch, queries, heads, _ = query.shape
    return batch, heads, queries, key.shape[1]


def _forward_call(query, key, value):
    return tuple(
        jax.ffi.ffi_call("hetclip_attention_forward", _shapes(query.shape))(
            query, key, value, scale=_scale(query)
        )
    )


def _forward_with_probs_call(query, key, value):
    shapes = _shapes(query.shape, _probs_shape(query, key))
    return tuple(
        jax.ffi.ffi_call("hetclip_attention_forward_with_probs", shapes)(
            query, key, value, scale=_scale(query)
        )
    )


def _backward_call(query, key, value, probs, grad_out):
    shapes = _shapes(query.shape, key.shape, value.shape)
    return tuple(
        jax.ffi.ffi_call("hetclip_attention_backward", shapes)(
            query, key, value, probs, grad_out, scale=_scale(query)
        )
    )


# Factors of each array (Shardy's einsum-like rule): b batch, h heads, q / k query / key tokens,
# d head size. Token arrays are [B, T, H, d], probabilities [B, H, Q, K].
QUERY, KEY, PROBS = "b q h d", "b k h d", "b h q k"


def _partitioned(call, operands: tuple[str, ...], results: tuple[str, ...]):
    """`call` under custom_partitioning: each device runs it on its own shard, the batch and head
    axes sharded as the query is, token and head-size axes gathered where they are sharded."""

    def shardings(mesh, arrays: tuple[str, ...], query_sharding) -> tuple[NamedSharding, ...]:
        spec = tuple(getattr(query_sharding, "spec", ())) + (None,) * 4
        axes = {"b": spec[0], "h": spec[2]}
        return tuple(
            NamedSharding(mesh, P(*(axes.get(f) for f in factors.split()))) for factors in arrays
        )

    def partition(mesh, arg_shapes, result_shape):
        query_sharding = arg_shapes[0].sharding
        return (
            mesh,
            call,
            shardings(mesh, results, query_sharding),
            shardings(mesh, operands, query_sharding),
        )

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, results, arg_shapes[0].sharding)

    wrapped = custom_partitioning(call)
    wrapped.def_partition(
        partition,
        infer_sharding_from_operands=infer,
        sharding_rule=f"{', '.join(operands)} -> {', '.join(results)}",
        need_replication_factors=("q", "d", "k"),  # in order of first appearance
    )
    return wrapped


_forward = _partitioned(_forward_call, (QUERY, KEY, KEY), (QUERY,))
_forward_with_probs = _partitioned(_forward_with_probs_call, (QUERY, KEY, KEY), (QUERY, PROBS))
_backward = _partitioned(_backward_call, (QUERY, KEY, KEY, PROBS, QUERY), (QUERY, KEY, KEY))


@jax.custom_vjp
def _attention(query, key, value):
    return _forward(query, key, value)[0]


def _attention_forward(query, key, value):
    out, probs = _forward_with_probs(query, key, value)
    return out, (query, key, value, probs)


def _attention_backward(residuals, grad_out):
    return _backward(*residuals, grad_out)


_attention.defvjp(_attention_forward, _attention_backward)


def attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v for float32 q [B, Q, H, d], k / v [B, K, H, d] -> [B, Q, H, d]
    (check `supports` first). The backward pass reads the forward's probabilities [B, H, Q, K]
    (kept as a residual, as XLA's attention keeps them)."""
    if not available():
        raise RuntimeError(
            f"the CPU attention kernel is not available (switched off by {SWITCH}=0, or no C++ "
            "compiler); call towers.common.fused_attention, which falls back to XLA's attention."
        )
    batch, _, heads, depth = query.shape
    if key.shape != value.shape or (key.shape[0], *key.shape[2:]) != (batch, heads, depth):
        raise ValueError(
            f"attention needs q [B, Q, H, d] and k, v [B, K, H, d] of the same B, H and d; got "
            f"q {query.shape}, k {key.shape}, v {value.shape}."
        )
    return _attention(query, key, value)
