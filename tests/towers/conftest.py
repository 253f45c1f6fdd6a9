"""The towers' tests run the compiled CPU kernels on every CPU: by default attention's and the
weight gradient's run only where the CPU has AVX-512 (towers/cpu_kernels.py), but their values
must hold wherever they build."""

import pytest

from towers import cpu_attention, cpu_dense, cpu_layer_norm


@pytest.fixture(autouse=True)
def _kernels_on_any_cpu(monkeypatch):
    for switch in (cpu_attention.SWITCH, cpu_dense.SWITCH, cpu_layer_norm.SWITCH):
        monkeypatch.setenv(switch, "1")
