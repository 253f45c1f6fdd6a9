"""The huge-page environment and the one re-execution of the `hetclip` command."""

import json
import os
import subprocess
import sys

from hetclip import hugepages


def test_with_huge_pages_adds_the_tunable_once_and_keeps_others():
    assert hugepages.with_huge_pages({}, available=True)["GLIBC_TUNABLES"] == hugepages.TUNABLE
    env = hugepages.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, True)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{hugepages.TUNABLE}"
    assert hugepages.with_huge_pages(env, available=True) == env
    assert "GLIBC_TUNABLES" not in hugepages.with_huge_pages({}, available=False)
    opted_out = hugepages.with_huge_pages({"HETCLIP_HUGEPAGES": "0"}, available=True)
    assert "GLIBC_TUNABLES" not in opted_out


def test_huge_pages_available_reads_the_kernel_mode(tmp_path):
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    assert hugepages.huge_pages_available(str(mode)) == sys.platform.startswith("linux")
    mode.write_text("always madvise [never]\n")
    assert not hugepages.huge_pages_available(str(mode))
    assert not hugepages.huge_pages_available(str(tmp_path / "missing"))


def test_reexec_keeps_the_pid_and_the_command_line():
    script = (
        "import json, os, sys\n"
        "pid = os.getpid()\n"
        "from hetclip import hugepages\n"
        "hugepages.reexec_with_huge_pages()\n"
        "print(json.dumps({'pid': pid, 'argv': sys.argv[1:],"
        " 'tunables': os.environ.get('GLIBC_TUNABLES')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HETCLIP_HUGEPAGES")}
    child = subprocess.Popen(
        [sys.executable, "-c", script, "a", "--b=1"], env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["pid"] == child.pid  # replaced in place: the caller's pid and exit code hold
    assert report["argv"] == ["a", "--b=1"]
    expected = hugepages.TUNABLE if hugepages.huge_pages_available() else None
    assert report["tunables"] == expected
