"""The allocator environment (tcmalloc preloaded, else huge pages) and the one re-execution of the
`hetclip` command."""

import json
import os
import subprocess
import sys

from hetclip import allocator


def test_with_huge_pages_adds_the_tunable_once_and_keeps_others():
    assert allocator.with_huge_pages({}, available=True)["GLIBC_TUNABLES"] == allocator.TUNABLE
    env = allocator.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, True)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{allocator.TUNABLE}"
    assert allocator.with_huge_pages(env, available=True) == env
    assert "GLIBC_TUNABLES" not in allocator.with_huge_pages({}, available=False)
    opted_out = allocator.with_huge_pages({"HETCLIP_HUGEPAGES": "0"}, available=True)
    assert "GLIBC_TUNABLES" not in opted_out


def test_huge_pages_available_reads_the_kernel_mode(tmp_path):
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    assert allocator.huge_pages_available(str(mode)) == sys.platform.startswith("linux")
    mode.write_text("always madvise [never]\n")
    assert not allocator.huge_pages_available(str(mode))
    assert not allocator.huge_pages_available(str(tmp_path / "missing"))


def test_reexec_keeps_the_pid_and_the_command_line():
    script = (
        "import json, os, sys\n"
        "pid = os.getpid()\n"
        "from hetclip import allocator\n"
        "allocator.reexec_with_allocator()\n"
        "print(json.dumps({'pid': pid, 'argv': sys.argv[1:],"
        " 'tunables': os.environ.get('GLIBC_TUNABLES')}))\n"
    )
    names = ("GLIBC_TUNABLES", "HETCLIP_HUGEPAGES", "HETCLIP_TCMALLOC", "LD_PRELOAD")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["HETCLIP_TCMALLOC"] = "0"  # the huge-page path; tcmalloc's is tested below
    child = subprocess.Popen(
        [sys.executable, "-c", script, "a", "--b=1"], env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["pid"] == child.pid  # replaced in place: the caller's pid and exit code hold
    assert report["argv"] == ["a", "--b=1"]
    expected = allocator.TUNABLE if allocator.huge_pages_available() else None
    assert report["tunables"] == expected


def test_tcmalloc_is_found_where_run_py_puts_it_and_can_be_turned_off(tmp_path):
    library = tmp_path.joinpath(*allocator.TCMALLOC_DIR, allocator.TCMALLOC)
    library.parent.mkdir(parents=True)
    library.write_bytes(b"")
    on_linux = sys.platform.startswith("linux")
    assert allocator.find_tcmalloc({}, prefix=str(tmp_path)) == (str(library) if on_linux else None)
    assert allocator.find_tcmalloc({"HETCLIP_TCMALLOC": "0"}, prefix=str(tmp_path)) is None
    named = tmp_path / "mine.so"
    named.write_bytes(b"")
    found = allocator.find_tcmalloc({"HETCLIP_TCMALLOC": str(named)}, prefix=str(tmp_path))
    assert found == (str(named) if on_linux else None)


def test_allocator_env_preloads_tcmalloc_once_and_keeps_other_preloads():
    env = allocator.allocator_env({"LD_PRELOAD": "/x/libother.so"}, "/y/libtcmalloc_minimal.so.4")
    assert env["LD_PRELOAD"] == "/x/libother.so:/y/libtcmalloc_minimal.so.4"
    assert "GLIBC_TUNABLES" not in env  # glibc's malloc is not the one in use
    assert allocator.allocator_env(env, "/y/libtcmalloc_minimal.so.4") == env
    fallback = allocator.allocator_env({"HETCLIP_TCMALLOC": "0"}, None)
    assert "LD_PRELOAD" not in fallback
    assert fallback == allocator.with_huge_pages({"HETCLIP_TCMALLOC": "0"})


def test_reexec_preloads_tcmalloc_where_it_is_installed():
    library = allocator.find_tcmalloc({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    script = (
        "import os\n"
        "from hetclip import allocator\n"
        "allocator.reexec_with_allocator()\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(os.environ.get('LD_PRELOAD'), 'libtcmalloc' in maps)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "HETCLIP_TCMALLOC")}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    preload, mapped = result.stdout.split()
    # Where a copy exists (run.py fetched it, or the system has one) it is loaded in the process.
    assert preload == str(library) and mapped == str(library is not None)


def test_inline_cpu_dispatch_follows_tcmalloc_and_the_switch():
    script = (
        "import json, sys, jax\n"
        "from hetclip import allocator\n"
        "done = allocator.inline_cpu_dispatch(json.loads(sys.argv[1]))\n"
        "print(json.dumps([done, jax.config.read('jax_cpu_enable_async_dispatch')]))\n"
    )
    tcmalloc = {"LD_PRELOAD": "/x/libother.so:/y/libtcmalloc_minimal.so.4"}
    cases = {
        json.dumps(tcmalloc): [True, False],
        json.dumps({**tcmalloc, allocator.ASYNC_DISPATCH_SWITCH: "1"}): [False, True],
        json.dumps({"LD_PRELOAD": "/x/libother.so"}): [False, True],
    }
    for env, expected in cases.items():
        result = subprocess.run(
            [sys.executable, "-c", script, env], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == expected, env


def test_with_tcmalloc_a_computation_frees_its_temporaries_before_it_returns():
    # Two steps' temporary blocks alive at once would double what tcmalloc keeps (allocator.py).
    script = (
        "import ctypes, json, time\n"
        "from hetclip import allocator\n"
        "allocator.reexec_with_allocator()\n"
        "import jax, jax.numpy as jnp\n"
        "def allocated():  # tcmalloc's count; 0 under glibc\n"
        "    query = getattr(ctypes.CDLL(None), 'MallocExtension_GetNumericProperty', None)\n"
        "    value = ctypes.c_size_t(0)\n"
        "    if query:\n"
        "        query(b'generic.current_allocated_bytes', ctypes.byref(value))\n"
        "    return value.value\n"
        "step = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x) @ x, axis=0))\n"
        "x = jax.block_until_ready(jnp.ones((1536, 1536)))\n"
        "step(x).block_until_ready()\n"
        "y = step(x)\n"
        "ready, at_return = y.is_ready(), allocated()\n"
        "time.sleep(0.5)\n"
        "print(json.dumps([jax.config.read('jax_cpu_enable_async_dispatch'), ready, at_return,"
        " allocated()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "HETCLIP_TCMALLOC")}
    env.pop(allocator.ASYNC_DISPATCH_SWITCH, None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    asynchronous, ready, at_return, later = json.loads(result.stdout.strip().splitlines()[-1])
    if allocator.find_tcmalloc(env) is None:
        assert asynchronous  # glibc frees each block at once: JAX's default dispatch is kept
        return
    assert not asynchronous and ready  # ran inline: the call returned with its result computed
    # The [1536, 1536] temporaries (9 MB each) were already freed when the call returned.
    assert at_return - later < 4_000_000, (at_return, later)
