#!/usr/bin/env bash
# Issue 8's GPU check, for a machine with CUDA where the project is installed (pip install -e ".[test]").
# Runs the GPU tests (skipped elsewhere), then times the engine there (bench/gpu.py); logs and
# bench/gpu.json (stamped with its commit) go to $OUT (or the current folder); commit gpu.json to bench/.
set -euo pipefail
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_device.txt"
python -m pytest -q -rs tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
PYTHONUNBUFFERED=1 python bench/gpu.py --out "$out/gpu.json" 2>&1 | tee "$out/gpu_bench.log"
