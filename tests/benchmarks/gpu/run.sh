#!/usr/bin/env bash
# On the device machine, after every part is in /tmp/parts: install, then measure.
set -euo pipefail
wheel="/tmp/$(cat .gpu/small/wheel-name)"
cat /tmp/parts/part-* > "$wheel"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheel" .gpu/small/*.whl
export PYTHONPATH="/tmp/site:$PWD"
# onnxruntime-gpu loads CUDA 13 and cuDNN 9 from the loader path: the image's pip-installed
# nvidia-* packages (PyTorch's) hold them.
nvidia_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))')
export LD_LIBRARY_PATH="${nvidia_libs}:${LD_LIBRARY_PATH:-}"
python3 tests/benchmarks/gpu/check.py "${MODEL_DIR:-models/current}" "$OUT/gpu-check.json"
