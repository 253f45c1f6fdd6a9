#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md and the tower tests, in one call on a lent CUDA machine:
#
#   bash benchmarks/gpu_suite.sh OUT_DIR
#
# Runs under that machine's python3 (its JAX, torch and CUDA); wheels of the packages it lacks
# (ml_collections; open_clip_torch, ftfy and wcwidth for vs_open_clip.py) are installed from
# .whl/ when present. Order: the ViT-B/16 step rows (train_step.py), hetclip vs open_clip
# compiled with torch.compile, the towers' tests on the GPU, and the CPU attention kernel's tests
# on that machine's CPU (its compiler and jaxlib). Each part has its own time limit.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"
} 2>&1 | tee "$out/machine.txt"
timeout 250 python3 benchmarks/train_step.py --only GPU --out "$out/train_step_gpu.json" 2>&1 \
  | grep -v -i warning | tee "$out/train_step.log"
timeout 200 python3 benchmarks/vs_open_clip.py --torch-python python3 --only GPU --torch-compile \
  --out "$out/vs_open_clip_gpu_compiled.json" 2>&1 | grep -v -i warning | tee "$out/vs_open_clip.log"
# The flat-product test counts the CPU's attention calls, so it is the CPU's alone.
JAX_PLATFORMS=cuda timeout 90 python3 -m pytest -q -p no:cacheprovider tests/towers/test_common.py \
  -k "not dense_layers" 2>&1 | tail -4 | tee "$out/tests.txt"
JAX_PLATFORMS=cpu timeout 90 python3 -m pytest -q -p no:cacheprovider \
  tests/towers/test_cpu_attention.py 2>&1 | tail -4 | tee -a "$out/tests.txt"
