"""Speed of each product tile shape of the CPU kernels (towers/cpu_kernels.h), one thread.

  python benchmarks/kernel_tiles.py [--header path/to/cpu_kernels.h]

Compiles benchmarks/kernel_tiles.cc with the flags the kernels are built with
(towers.cpu_kernels.FLAGS, without -shared) against the header (the working tree's, or
--header's, e.g. `git show HEAD~1:towers/cpu_kernels.h > /tmp/old/cpu_kernels.h`) and prints
GFLOP/s for 1-6 rows x 1-6 vectors, data in the core's caches: a tile that runs well below the
6 x 4 tile is load-bound or spills.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchmarks/towers.py would shadow the towers package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", type=Path, help="a cpu_kernels.h to use instead")
    args = parser.parse_args()
    import jax

    from towers import cpu_kernels

    cxx = cpu_kernels.compiler()
    if cxx is None:
        raise SystemExit("kernel_tiles.py needs a C++ compiler (set CXX or install g++)")
    header_dir = (args.header or cpu_kernels.HEADERS[0]).resolve().parent
    flags = [flag for flag in cpu_kernels.FLAGS if flag not in ("-shared", "-fPIC")]
    with tempfile.TemporaryDirectory() as folder:
        binary = os.path.join(folder, "kernel_tiles")
        command = [cxx, *flags, f"-I{header_dir}", f"-I{jax.ffi.include_dir()}"]
        command += [str(HERE / "kernel_tiles.cc"), "-o", binary]
        subprocess.run(command, check=True, capture_output=True, text=True)
        print(f"tiles of {header_dir / 'cpu_kernels.h'}:", flush=True)
        sys.exit(subprocess.run([binary]).returncode)


if __name__ == "__main__":
    main()
