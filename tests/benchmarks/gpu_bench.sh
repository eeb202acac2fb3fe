#!/usr/bin/env bash
# GPU figures for issue 5: the model sweep, then `python -m stream bench` twice on CUDA.
#
# Usage: tests/benchmarks/gpu_bench.sh OUT_DIR
# Needs: a CUDA GPU, onnxruntime-gpu 1.31 with CUDA 13 / cuDNN 9 libraries on the loader
# path, streamrec and its dependencies importable, STREAMREC_MODEL_DIR and
# STREAMREC_DATASETS_DIR set. Writes sweep.json, bench-default.json, bench-latency.json and
# logs.tar.gz into OUT_DIR.
set -euo pipefail
out=$(realpath -m "${1:?usage: gpu_bench.sh OUT_DIR}")
work=$(mktemp -d)
mkdir -p "$out"
export STREAMREC_PROVIDER=cuda PYTHONUNBUFFERED=1
# A GPU scores 1024 users in about the time a CPU scores one: batch wide.
export STREAMREC_BATCH_MAX_USERS=${STREAMREC_BATCH_MAX_USERS:-1024}

python3 -m tests.benchmarks.model_sweep --out "$out/sweep.json" >"$work/sweep.log" 2>&1 \
    || { tail -40 "$work/sweep.log"; exit 1; }
echo "sweep done"

# The worker's defaults, at the GPU batch size.
python3 -m stream bench --out "$work/default" >"$work/bench-default.log" 2>&1 \
    || { tail -40 "$work/bench-default.log"; exit 1; }
cp "$work/default/bench.json" "$out/bench-default.json"
echo "bench (defaults) done"

# Tuned for latency: shorter fetch waits (the embedded broker always waits the full
# fetch.max.wait.ms), 2 ms batch deadline, 1 ms producer linger.
STREAMREC_FETCH_MAX_WAIT_MS=${LATENCY_FETCH_MAX_WAIT_MS:-20} STREAMREC_BATCH_MAX_WAIT_MS=2 \
    STREAMREC_PRODUCER_LINGER_MS=1 \
    python3 -m stream bench --out "$work/latency" >"$work/bench-latency.log" 2>&1 \
    || { tail -40 "$work/bench-latency.log"; exit 1; }
cp "$work/latency/bench.json" "$out/bench-latency.json"
echo "bench (latency-tuned) done"

tar czf "$out/logs.tar.gz" -C "$work" .
