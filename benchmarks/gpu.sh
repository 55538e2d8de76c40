#!/usr/bin/env bash
# GPU figures in one go, on a bare CUDA machine, in under 10 minutes:
#   1. installs l2v (pip install -e ".[test]") and flash-attn from a prebuilt wheel if one installs
#      (never a source build: that takes longer than the whole budget); without it the packed path
#      runs on flex_attention (torch's varlen path) and sdpa runs padded/dense batches
#   2. benchmarks/encode.py for llama1b and mistral7b, bf16, once per attention backend available
#   3. the GPU tests: pytest -m gpu
# Every encode JSON line goes to the output file (default benchmarks/gpu-results.jsonl), one per run;
# a run that fails or times out leaves a line with "error". Without a CUDA device nothing is measured
# and the file says "not measured".
#
#   bash benchmarks/gpu.sh [OUTPUT.jsonl]
#
# Targets (one H100, bf16, the workload of benchmarks/workload.py): mistral7b >= 40,000 tok/s,
# llama1b >= 150,000 tok/s, peak memory <= 16.3 GiB at mistral7b.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu-results.jsonl}
py=${PYTHON:-python3}
texts=${TEXTS:-4096}
started=$SECONDS
: >"$out"

if ! $py -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo '{"gpu": "not measured", "reason": "no CUDA device on this machine"}' | tee -a "$out"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. what the runs need; offline machines keep what they have and use the checkout as it is
if ! timeout 150 $py -m pip install -q -e ".[test]"; then
    echo "pip install of l2v failed (offline?): running from the checkout with the packages already installed"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! $py -c 'import flash_attn' 2>/dev/null; then
    timeout 90 $py -m pip install -q --only-binary=:all: flash-attn \
        || echo "no flash-attn wheel for this torch/CUDA: packed batches use flex_attention"
fi
backends="sdpa flex_attention"
if $py -c 'import flash_attn' 2>/dev/null; then
    backends="$backends flash_attention_2"
fi
echo "backends: $backends"

# 2. encode figures; each run bounded, and none starts past the budget (480 s, then the tests)
for shape in llama1b mistral7b; do
    for attn in $backends; do
        limit=$([ "$shape" = mistral7b ] && echo 150 || echo 75)
        left=$((480 - (SECONDS - started)))
        if [ "$left" -lt 40 ]; then
            printf '{"shape": "%s", "attn": "%s", "device": "cuda", "error": "not measured: out of time"}\n' \
                "$shape" "$attn" | tee -a "$out"
            continue
        fi
        [ "$limit" -gt "$left" ] && limit=$left
        log=$(mktemp)
        timeout "$limit" $py benchmarks/encode.py --shape "$shape" --device cuda --dtype bfloat16 --attn "$attn" \
            --texts "$texts" --repeats 3 --naive-texts 256 >"$log" 2>"$log.err"
        status=$?
        if [ "$status" -eq 0 ]; then
            tail -n 1 "$log" | tee -a "$out"
        else
            reason=$(grep -v '^repeat ' "$log.err" | tail -n 1 | tr -d '"\\' | cut -c1-300)
            printf '{"shape": "%s", "attn": "%s", "device": "cuda", "error": "exit %s (limit %s s): %s"}\n' \
                "$shape" "$attn" "$status" "$limit" "$reason" | tee -a "$out"
        fi
        rm -f "$log" "$log.err"
    done
done

# 3. GPU tests
timeout 90 $py -m pytest -q -m gpu tests 2>&1 | tail -n 15
echo "gpu.sh: $((SECONDS - started)) s; figures in $out"
