#!/usr/bin/env python3
"""One-command entry points for a fresh machine that has nothing but Python 3.11+.

  python3 run.py main   set up, prepare the embedded data, train and evaluate HET-XL CLIP, the
                        CLIP baseline and LiT, write the report to docs/report/ (about 20 min)
  python3 run.py test   set up, run the whole test suite (what CI runs)

Each command creates what it needs itself and is idempotent: the virtual environment in .venv is
(re)installed only when pyproject.toml or a requirements file changed, and prepared data sets in
./data are reused. Only the standard library is used here because nothing else exists yet.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".hetclip-install-stamp"
MIN_PYTHON = (3, 11)


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements.lock", "requirements-nodeps.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_environment() -> Path:
    """Creates .venv and installs hetclip with pinned dependencies, once per dependency change."""
    if sys.version_info < MIN_PYTHON:
        sys.exit(
            f"hetclip needs Python {'.'.join(map(str, MIN_PYTHON))} or newer (jax requires it); "
            f"this is {sys.version.split()[0]}. Run this script with a newer python3."
        )
    python = _venv_python()
    if not python.exists():
        print(f"[setup] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    fingerprint = _install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return python
    print("[setup] installing hetclip and its pinned dependencies (about 2 minutes)", flush=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "install", "-q", "-c", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[dev]"],
        check=True,
    )
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "-r", str(ROOT / "requirements-nodeps.txt")],
        check=True,
    )
    fetch_tcmalloc()
    STAMP.write_text(fingerprint)
    return python


def fetch_tcmalloc() -> None:
    """Copies gperftools' tcmalloc from Debian's libtcmalloc-minimal4 package into the venv
    (why: hetclip/allocator.py). Where apt-get, dpkg-deb or the package is missing, a note says
    so and glibc's malloc with huge pages is used instead."""
    allocator = _allocator_module()
    target = VENV.joinpath(*allocator.TCMALLOC_DIR, allocator.TCMALLOC)
    if target.exists() or not sys.platform.startswith("linux"):
        return
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        print("[setup] no apt-get / dpkg-deb: XLA:CPU buffers use glibc's malloc", flush=True)
        return
    print("[setup] fetching tcmalloc (Debian's libtcmalloc-minimal4) for XLA:CPU", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            download = ["apt-get", "download", "libtcmalloc-minimal4"]
            subprocess.run(download, cwd=scratch, check=True, capture_output=True, timeout=300)
            (package,) = Path(scratch).glob("*.deb")
            unpacked = Path(scratch) / "root"
            subprocess.run(["dpkg-deb", "-x", str(package), str(unpacked)], check=True)
            (library,) = unpacked.rglob(target.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(library, target)  # the file the package's symlink names
        except (subprocess.SubprocessError, ValueError, OSError) as error:
            detail = getattr(error, "stderr", None) or error
            print(
                f"[setup] tcmalloc not installed ({detail!s:.300}); XLA:CPU buffers use "
                "glibc's malloc",
                flush=True,
            )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HETCLIP_DATA_DIR", str(ROOT / "data"))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # tcmalloc, else huge pages, for XLA:CPU's buffers (why: hetclip/allocator.py).
    allocator = _allocator_module()
    return allocator.allocator_env(env, allocator.find_tcmalloc(env, prefix=str(VENV)))


@functools.cache
def _allocator_module():
    """hetclip/allocator.py, loaded by path: it uses the standard library only, so it works
    before (and without) the venv's packages."""
    spec = importlib.util.spec_from_file_location(
        "hetclip_allocator", ROOT / "hetclip" / "allocator.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main_job(python: Path, extra: list[str]) -> int:
    """The main job on the embedded default data: prepare it, train HET-XL CLIP, the CLIP
    baseline and LiT, evaluate them and write docs/report/ (see hetclip/main_job.py)."""
    prepare = [str(python), "-m", "hetclip.cli", "data", "prepare", "--name", "imagetext"]
    code = subprocess.run(prepare, env=_env(), cwd=ROOT).returncode
    if code:
        return code
    job = [str(python), "-m", "hetclip.main_job", "--command", "python3 run.py main", *extra]
    return subprocess.run(job, env=_env(), cwd=ROOT).returncode


def test_workers(extra: list[str]) -> list[str]:
    """pytest-xdist's options for one test process per core (at most 4), unless `extra` picks
    its own (-n / --numprocesses, or -p no:xdist). Why: the suite spends most of its time
    compiling on one thread; on 2 cores one process kept 1.26 of them busy (39 min)."""
    if any(a.startswith(("-n", "--numprocesses")) or a == "no:xdist" for a in extra):
        return []
    workers = min(os.cpu_count() or 1, 4)
    return ["-n", str(workers), "--dist", "worksteal"] if workers > 1 else []


def run_tests(python: Path, extra: list[str]) -> int:
    # The slowest tests' times in every log keep tests/conftest.py's `slow` marks true.
    command = [str(python), "-m", "pytest", "-q", "--durations=12", *test_workers(extra), *extra]
    return subprocess.run(command, cwd=ROOT, env=_env()).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("main", "test"):
        print(__doc__)
        return 2
    python = ensure_environment()
    if argv[0] == "main":
        return main_job(python, argv[1:])
    return run_tests(python, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
