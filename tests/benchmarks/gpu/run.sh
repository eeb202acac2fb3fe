#!/usr/bin/env bash
# On the device machine, after every part is in /tmp/parts: install, then measure.
set -euo pipefail
wheel="/tmp/$(cat .gpu/small/wheel-name)"
cat /tmp/parts/part-* > "$wheel"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheel" .gpu/small/*.whl
export PYTHONPATH="/tmp/site:$PWD"
python3 tests/benchmarks/gpu/check.py "${MODEL_DIR:-models/current}" "$OUT/gpu-check.json"
