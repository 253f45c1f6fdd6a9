"""`kernels_on_any_cpu`: the kernels' tests run the compiled CPU kernels on every CPU. By default
attention's and the weight gradient's run only where the CPU has AVX-512 (towers/cpu_kernels.py),
but their values must hold wherever they build. Opt-in, so that the towers' other tests run
what users get (on an AVX2 CPU the forced kernels are 5-20x slower than XLA)."""

import pytest

from towers import cpu_attention, cpu_dense, cpu_layer_norm


@pytest.fixture
def kernels_on_any_cpu(monkeypatch):
    for switch in (cpu_attention.SWITCH, cpu_dense.SWITCH, cpu_layer_norm.SWITCH):
        monkeypatch.setenv(switch, "1")
