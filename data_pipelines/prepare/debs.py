"""Fetching Debian packages from the registry and unpacking the files we need, without root.

`apt-get download` runs against a package list kept in our own cache folder (so no root and no
system `apt-get update` is needed). Unpacking is pure Python (a .deb is an `ar` archive holding
data.tar.{xz,gz,bz2}); only members that a filter accepts are written.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from data_pipelines.progress import Progress


def _apt_options(cache: Path) -> list[str]:
    lists = cache / "apt-lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (cache / "apt-archives" / "partial").mkdir(parents=True, exist_ok=True)
    return [
        f"-oDir::State::Lists={lists}",
        f"-oDir::Cache::Archives={cache / 'apt-archives'}",
        f"-oDir::Cache::pkgcache={cache / 'apt-pkgcache.bin'}",
        f"-oDir::Cache::srcpkgcache={cache / 'apt-srcpkgcache.bin'}",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root" if os.geteuid() == 0 else "-oAPT::Sandbox::User=",
    ]


def find_deb(package: str, cache: Path) -> Path | None:
    matches = sorted(glob.glob(str(cache / f"{package}_*.deb")))
    return Path(matches[-1]) if matches else None


def fetch_debs(packages: Sequence[str], cache: Path) -> dict[str, Path]:
    """Returns {package: .deb path}, downloading the ones not already in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    found = {p: find_deb(p, cache) for p in packages}
    missing = [p for p, path in found.items() if path is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise FileNotFoundError(
                f"Packages {missing} are needed and this machine has no apt-get to fetch them. "
                f"Download their .deb files from a Debian (bookworm) mirror into {cache} and run "
                "the command again."
            )
        options = _apt_options(cache)
        print(f"[prepare] fetching Debian packages {missing} into {cache}", flush=True)
        update = subprocess.run(
            ["apt-get", *options, "-q", "update"], capture_output=True, text=True
        )
        download = subprocess.run(
            ["apt-get", *options, "-q", "download", *missing],
            cwd=cache,
            capture_output=True,
            text=True,
        )
        if download.returncode:
            raise RuntimeError(
                f"apt-get download {' '.join(missing)} failed:\n{download.stderr.strip()}\n"
                f"(apt-get update said: {update.stderr.strip()[-500:]})\nCheck that the Debian "
                f"package registry is reachable, or place the .deb files in {cache} by hand."
            )
        found = {p: find_deb(p, cache) for p in packages}
    return {p: path for p, path in found.items() if path is not None}


def _ar_members(path: Path):
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not a Debian package (no ar header).")
        while header := f.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            start = f.tell()
            yield name, start, size
            f.seek(start + size + (size % 2))


def unpack_deb(path: Path, destination: Path, keep: Callable[[str], bool]) -> int:
    """Writes the data members of `path` that `keep(member name)` accepts under `destination`.

    Returns the number of files and symbolic links written. Member names are relative
    ("usr/share/..."); links that point outside the package are not written.
    """
    for name, start, size in _ar_members(path):
        if not name.startswith("data.tar"):
            continue
        # Stream mode ("r|..."): members are read strictly in order, never seeking backwards
        # inside the compressed stream (which would decompress it again from the start).
        mode = {".xz": "r|xz", ".gz": "r|gz", ".bz2": "r|bz2", ".tar": "r|"}[
            os.path.splitext(name)[1] or ".tar"
        ]
        with open(path, "rb") as f:
            f.seek(start)
            with tarfile.open(fileobj=_Window(f, start, size), mode=mode) as tar:
                written = 0
                progress = Progress(f"unpack {path.name.split('_')[0]}")
                for member in tar:
                    member_name = member.name.lstrip("./")
                    if not (member.isfile() or member.issym()) or not keep(member_name):
                        continue
                    target = destination / member_name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if member.issym():
                        # Packages link duplicate files; keep the link (as dpkg does) when it
                        # stays inside the package, so collectors can tell duplicates apart.
                        resolved = (target.parent / member.linkname).resolve()
                        if resolved.is_relative_to(destination.resolve()):
                            target.unlink(missing_ok=True)
                            target.symlink_to(member.linkname)
                            written += 1
                        continue
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written += 1
                    progress.update()
                progress.close()
                return written
    raise ValueError(f"{path} has no data.tar member.")


class _Window:
    """A read-only file view of bytes [start, start + size) of an open file."""

    def __init__(self, f, start: int, size: int):
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos
