#!/usr/bin/env bash
# Stage 2 (compare): the merged SFT model writes one consensus answer per study with `swift infer`.
# Resumable: answers are appended to RESULTS as they are written, and a restart only asks for the
# studies that have none yet (python -m data_prep pending). Extra arguments go to `swift infer`.
#   INFER_BACKEND   vllm when vLLM is installed and a GPU is present, else transformers
set -euo pipefail
# shellcheck source=shells/common.sh
source "$(dirname "$0")/common.sh"

MODEL=${MODEL:-./output/sft-merged}
REQUESTS=${REQUESTS:-./data/consensus_requests.jsonl}
RESULTS=${RESULTS:-./data/consensus.jsonl}
PENDING=${PENDING:-${RESULTS%.jsonl}.pending.jsonl}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-2048}
TEMPERATURE=${TEMPERATURE:-0}
WRITE_BATCH=${WRITE_BATCH:-64}                    # answers kept on disk at least this often
PYTHON=${PYTHON:-python}
if [ -z "${INFER_BACKEND:-}" ]; then
  if "$PYTHON" -c 'import vllm' 2>/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    INFER_BACKEND=vllm
  else
    INFER_BACKEND=transformers
  fi
fi

require_model "$MODEL" MODEL
require_dataset "$REQUESTS" REQUESTS

run "$PYTHON" -m data_prep pending --requests "$REQUESTS" --results "$RESULTS" --out "$PENDING"
if [ "${DRY_RUN:-0}" != 1 ] && [ ! -s "$PENDING" ]; then
  echo "every request in $REQUESTS has an answer in $RESULTS"
  exit 0
fi

mapfile -t launch < <(launch_env)
run env "${launch[@]}" swift infer \
    --model "$MODEL" \
    --val_dataset "$PENDING" \
    --result_path "$RESULTS" \
    --infer_backend "$INFER_BACKEND" \
    --max_new_tokens "$MAX_NEW_TOKENS" \
    --temperature "$TEMPERATURE" \
    --write_batch_size "$WRITE_BATCH" \
    "$@"
