#!/usr/bin/env bash
# Download the wheels the GPU checks carry (cp312, manylinux x86-64) into .gpu/ and split
# onnxruntime-gpu into parts one device call can carry. See README.md beside this.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu/' .gitignore || { echo "/.gpu/ must be ignored" >&2; exit 1; }
mkdir -p .gpu/small
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip_get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$1" "$2"
}
pip_get .gpu 'onnxruntime-gpu>=1.31,<1.32'
pip_get .gpu/small 'orjson'
rm -f .gpu/part-*
split -b 60m -d .gpu/onnxruntime_gpu-*.whl .gpu/part-
basename .gpu/onnxruntime_gpu-*.whl > .gpu/small/wheel-name
ls .gpu/part-* | sed 's/^/carry and copy: /'
