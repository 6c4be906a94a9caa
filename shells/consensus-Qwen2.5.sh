#!/usr/bin/env bash
# Stage 2 (compare): the merged SFT model writes one consensus answer per study with `swift infer`.
# Data parallel: the pending requests are dealt over one shard per engine, one `swift infer` per shard on its
# own GPUs (CUDA_VISIBLE_DEVICES), each writing its own file in PARTS; once all have exited the parts are
# merged into RESULTS (temporary file + rename). Resumable: answers reach the part files as they are
# written (WRITE_BATCH), and a restart only asks for the studies without a complete answer in RESULTS or
# PARTS (python -m data_prep pending); no results file is ever modified in place. Extra arguments go to
# every `swift infer`.
#   INFER_PYTHON     the inference environment: .venv-infer when `bash scripts/setup.sh --infer` built it, else
#                    PYTHON; `swift` is the one beside it (else the one on PATH)
#   INFER_BACKEND    vllm when vLLM is installed there and a GPU is present, else transformers
#   NPROC_PER_NODE   GPUs to use (default 1); GPUS_PER_ENGINE (vLLM tensor parallel, default 1) of them per
#                    engine, so NPROC_PER_NODE / GPUS_PER_ENGINE engines and shards
#   INFER_BATCH      requests per batch of the transformers backend (--max_batch_size)
set -euo pipefail
# shellcheck source=shells/common.sh
source "$(dirname "$0")/common.sh"

MODEL=${MODEL:-./output/sft-merged}
REQUESTS=${REQUESTS:-./data/consensus_requests.jsonl}
RESULTS=${RESULTS:-./data/consensus.jsonl}
PENDING=${PENDING:-${RESULTS%.jsonl}.pending.jsonl}
PARTS=${PARTS:-${RESULTS%.jsonl}.parts}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-2048}
TEMPERATURE=${TEMPERATURE:-0}
WRITE_BATCH=${WRITE_BATCH:-64}                    # answers kept on disk at least this often
INFER_BATCH=${INFER_BATCH:-8}
NPROC_PER_NODE=${NPROC_PER_NODE:-1}
GPUS_PER_ENGINE=${GPUS_PER_ENGINE:-1}
PYTHON=${PYTHON:-python}
infer_venv=$(cd "$(dirname "$0")/.." && pwd)/.venv-infer
if [ -z "${INFER_PYTHON:-}" ] && [ -x "$infer_venv/bin/python" ]; then
  INFER_PYTHON=$infer_venv/bin/python
fi
INFER_PYTHON=${INFER_PYTHON:-$PYTHON}
command -v "$INFER_PYTHON" >/dev/null || fail INFER_PYTHON "'$INFER_PYTHON' is not an interpreter"
swift=swift
if [[ $INFER_PYTHON == */* ]] && [ -x "$(dirname "$INFER_PYTHON")/swift" ]; then
  swift=$(dirname "$INFER_PYTHON")/swift
fi
if [ -z "${INFER_BACKEND:-}" ]; then
  if "$INFER_PYTHON" -c 'import vllm' 2>/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    INFER_BACKEND=vllm
  else
    INFER_BACKEND=transformers
  fi
fi

require_model "$MODEL" MODEL
require_dataset "$REQUESTS" REQUESTS
if [ "$NPROC_PER_NODE" -lt 1 ] || [ "$GPUS_PER_ENGINE" -lt 1 ] || [ $((NPROC_PER_NODE % GPUS_PER_ENGINE)) -ne 0 ]; then
  fail GPUS_PER_ENGINE "$NPROC_PER_NODE GPUs (NPROC_PER_NODE) do not divide into engines of $GPUS_PER_ENGINE"
fi
if [ "$GPUS_PER_ENGINE" -gt 1 ] && [ "$INFER_BACKEND" != vllm ]; then
  fail GPUS_PER_ENGINE "tensor parallel (GPUS_PER_ENGINE=$GPUS_PER_ENGINE) needs INFER_BACKEND=vllm"
fi
engines=$((NPROC_PER_NODE / GPUS_PER_ENGINE))
IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $((NPROC_PER_NODE - 1)))}"
[ "${#gpus[@]}" -ge "$NPROC_PER_NODE" ] || fail CUDA_VISIBLE_DEVICES "${#gpus[@]} GPUs listed for NPROC_PER_NODE=$NPROC_PER_NODE"

case $INFER_BACKEND in
  vllm) backend_args=(--vllm_tensor_parallel_size "$GPUS_PER_ENGINE") ;;
  transformers) backend_args=(--max_batch_size "$INFER_BATCH") ;;
  *) backend_args=() ;;
esac
echo "consensus: $swift from $INFER_PYTHON ($("$INFER_PYTHON" -c 'import sys; print(sys.prefix)' 2>/dev/null || echo '?')), backend $INFER_BACKEND, $engines engine(s) x $GPUS_PER_ENGINE GPU(s)" >&2

run "$PYTHON" -m data_prep pending --requests "$REQUESTS" --results "$RESULTS" --parts "$PARTS" --out "$PENDING" \
    --shards "$engines"
# a new file per run and shard: an older part may end in an unfinished line that must not be appended to
run_id=$(date +%Y%m%d-%H%M%S)-$$
pids=()
# stopping the launcher stops its engines, so that no earlier run still appends while a restart reads
trap 'kill "${pids[@]}" 2>/dev/null; exit 143' INT TERM
for ((i = 0; i < engines; i++)); do
  shard=${PENDING%.jsonl}.shard$i.jsonl
  if [ "${DRY_RUN:-0}" != 1 ] && [ ! -s "$shard" ]; then
    continue
  fi
  devices=$(IFS=,; echo "${gpus[*]:$((i * GPUS_PER_ENGINE)):$GPUS_PER_ENGINE}")
  shard_env=(CUDA_VISIBLE_DEVICES="$devices")
  [ -n "${MAX_PIXELS:-}" ] && shard_env+=(MAX_PIXELS="$MAX_PIXELS")
  command=(env "${shard_env[@]}" "$swift" infer
      --model "$MODEL"
      --val_dataset "$shard"
      --result_path "$PARTS/$run_id-$i.jsonl"
      --infer_backend "$INFER_BACKEND"
      --max_new_tokens "$MAX_NEW_TOKENS"
      --temperature "$TEMPERATURE"
      --write_batch_size "$WRITE_BATCH"
      "${backend_args[@]}"
      "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    run "${command[@]}"
  else
    "${command[@]}" &
    pids+=($!)
  fi
done
# every shard's answers are merged, also when another shard failed; its requests stay pending
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
run "$PYTHON" -m data_prep merge --requests "$REQUESTS" --results "$RESULTS" --parts "$PARTS"
if [ "$status" -ne 0 ]; then
  echo "error: a swift infer shard failed (exit $status); its answers so far are kept, run again to resume" >&2
  exit "$status"
fi
