#!/usr/bin/env bash
# The device checks, prepared as one script for a session lent a GPU (the `device` tool runs it from the repository
# root; results go under $OUT, default benchmarks/results/gpu). Nothing downloads: random-weight models and the
# offline corpus only. Sized for ~10 minutes on one H200; each step writes its own log and stops at its own limit,
# so a step that overruns leaves the others' figures.
#
#   bash benchmarks/gpu.sh            # all three, in order
#   STEPS="scoring" bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-"scoring base compare"}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1 || true

for step in $STEPS; do
  case $step in
  scoring)
    # UDS scoring against explicit logits at Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14/2 heads, V=151,936),
    # bf16, three runs (a figure is a claim someone reruns: every run is reported).
    for run in 1 2 3; do
      timeout 150 $PY benchmarks/scoring.py --device cuda --dtype bfloat16 --vocab 151936 --hidden 896 --layers 24 \
        --intermediate 4864 --heads 14 --kv-heads 2 --batch 16 --length 512 --repeats 5 --explicit-repeats 2 \
        --out "$OUT/scoring-run$run.md" > "$OUT/scoring-run$run.log" 2>&1
    done
    ;;
  base)
    # A ~150 M-parameter base of the quality benchmark on the GPU (bf16 autocast; the shape is flags).
    timeout 240 $PY -m benchmarks.quality.base --device cuda --vocab 16384 --hidden 768 --layers 12 --heads 12 \
      --kv-heads 4 --ffn 2048 --steps 1500 --batch 32 --seq-len 512 --lr 1e-3 --no-progress \
      --data-dir "$OUT/bases" > "$OUT/base.log" 2>&1
    ;;
  compare)
    # The man-page comparison on that base, 5 paired seeds, on the GPU.
    timeout 240 $PY -m benchmarks.quality.compare --task manpages --seeds 5 --device cuda --vocab 16384 --hidden 768 \
      --layers 12 --heads 12 --kv-heads 4 --ffn 2048 --steps 1500 --batch 32 --seq-len 512 --lr 1e-3 \
      --data-dir "$OUT/bases" --cost-vocab 151936 --out "$OUT/compare-manpages" --no-progress > "$OUT/compare.log" 2>&1
    ;;
  esac
  echo "$step: exit $?" >> "$OUT/steps.txt"
done
rm -rf "$OUT/bases"/*/model.safetensors  # figures come back, weights do not (size limits)
cat "$OUT/steps.txt"
