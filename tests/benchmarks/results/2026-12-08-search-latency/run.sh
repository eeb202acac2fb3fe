#!/usr/bin/env bash
# /search/ latency, the model exported before and after this change alternated (same checkpoint,
# same weights): BEFORE is e333c580 (the dense prior, the unfused encoder), AFTER its re-export.
# usage: bash run.sh BEFORE_DIR AFTER_DIR PAIRS OUT_DIR
set -euo pipefail
before=$1 after=$2 pairs=$3 out=$4
mkdir -p "$out"
for i in $(seq "$pairs"); do
  for which in before after; do
    dir=$before; [ "$which" = after ] && dir=$after
    .venv/bin/python -m tests.benchmarks.search_latency --model "$dir" --rounds 3 \
      --out "$out/$which-$i.json" > /dev/null
  done
done
