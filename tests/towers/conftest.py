"""`kernels_on_any_cpu`: the kernels' tests run the compiled CPU kernels on every CPU and shape.
By default attention's runs only where the CPU has AVX-512, and elsewhere the weight gradient's
only where F <= K (towers/cpu_kernels.py), but their values must hold wherever they build.
Opt-in, so that the towers' other tests run what users get."""

import pytest

from towers import cpu_attention, cpu_dense, cpu_layer_norm


@pytest.fixture
def kernels_on_any_cpu(monkeypatch):
    for switch in (cpu_attention.SWITCH, cpu_dense.SWITCH, cpu_layer_norm.SWITCH):
        monkeypatch.setenv(switch, "1")
