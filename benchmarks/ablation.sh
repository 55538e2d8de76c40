#!/usr/bin/env bash
# The LLM2Vec recipe stage by stage on the bundled SmolLM2-135M (the paper's ablation at small scale):
# every chain of the README's ablation table trained with the recipes in l2v_core/training/recipes/ and scored on
# l2v-real's test splits at 512 tokens, with l2v-eval's instructions and with none. Training and scoring run in l2v's
# default dtype (auto: bf16 on a CPU with bf16 units, else fp32); the results record which.
#
#   bash benchmarks/ablation.sh [OUT]        # OUT defaults to runs/ablation; a re-run skips what finished
#   python benchmarks/ablation_table.py OUT  # the table (markdown + CSV) and its plot under reports/ablation/
#
# Stages run one after another (two jobs on a small CPU slow each other several times over). A stage that is
# killed resumes from its last checkpoint on the next run; a finished stage (its adapter saved) is not re-run.
# OUT/stages.tsv records each finished stage's steps and wall seconds.
set -euo pipefail
OUT=${1:-runs/ablation}
RECIPES=$(python -c "import l2v_core.training as t, os; print(os.path.join(os.path.dirname(t.__file__), 'recipes'))")
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# stage NAME STAGE CONFIG [--key value ...]: train OUT/NAME unless its adapter is already there.
stage() {
    local name=$1 kind=$2 config=$3
    shift 3
    if [[ -f "$OUT/$name/adapter/adapter_config.json" ]]; then
        echo "== $name: done before, kept"
        return
    fi
    echo "== $name: l2v-train $kind $config $* ($(date +%T))"
    local start=$SECONDS
    l2v-train "$kind" "$config" --output_dir "$OUT/$name" --progress_bar false "$@"
    local steps
    steps=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['max_steps'])" "$config")
    printf '%s\t%s\t%s\t%s\n' "$name" "$kind" "$steps" "$((SECONDS - start))" >> "$OUT/stages.tsv"
}

# evaluate NAME [l2v-eval args]: the chain's l2v-real row, with the default instructions and with none (one
# embedding cache for both: a text without an instruction is encoded once). A finished row is not recomputed.
evaluate() {
    local name=$1
    shift
    for instructions in default none; do
        echo "== eval $name, instructions $instructions ($(date +%T))"
        l2v-eval --tasks l2v-real --no-baselines --no-progress --instructions "$instructions" \
            --output "$OUT/results-$instructions" --embedding-cache "$OUT/embedding-cache" \
            --name "l2v-ablation/$name" "$@" | tail -3
    done
}

# MNTP first (every chain but one starts from it), the untrained rows, then the chains in the order of the paper's
# argument (the unsupervised encoder, the full chain) and the rows that isolate each stage; each chain is scored as
# soon as it is trained. The contrastive stages score nothing during training here.
no_eval=(--eval_tasks null --eval_steps 0)
stage mntp mntp "$RECIPES/bundled-l2v-mntp.json"
evaluate mntp --model "$OUT/mntp/adapter"
evaluate causal --model bundled --causal
evaluate bidirectional --model bundled
stage mntp-simcse simcse "$RECIPES/bundled-l2v-simcse.json" --mntp_adapter "$OUT/mntp/adapter"
evaluate mntp-simcse --model "$OUT/mntp-simcse/adapter"
stage mntp-simcse-supervised supervised "$RECIPES/bundled-l2v.json" --base_model "$OUT/mntp-simcse/adapter" \
    "${no_eval[@]}"
evaluate mntp-simcse-supervised --model "$OUT/mntp-simcse-supervised/adapter"
stage supervised supervised "$RECIPES/bundled-l2v.json" "${no_eval[@]}"
evaluate supervised --model "$OUT/supervised/adapter"
stage mntp-supervised supervised "$RECIPES/bundled-l2v.json" --mntp_adapter "$OUT/mntp/adapter" "${no_eval[@]}"
evaluate mntp-supervised --model "$OUT/mntp-supervised/adapter"
