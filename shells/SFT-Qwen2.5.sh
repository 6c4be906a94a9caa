#!/usr/bin/env bash
# Stage 1 (learn): LoRA SFT of the student on every teacher's trace. Defaults are the paper's recipe;
# every setting can be overridden from the environment, and extra arguments go to `swift sft`.
#   DRY_RUN=1 bash shells/SFT-Qwen2.5.sh      prints the command instead of running it
set -euo pipefail
# shellcheck source=shells/common.sh
source "$(dirname "$0")/common.sh"

MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
DATASET=${DATASET:-./data/sft.jsonl}
VAL_DATASET=${VAL_DATASET-./data/sft.eval.jsonl}   # set empty to train without evaluation
OUTPUT_DIR=${OUTPUT_DIR:-./output/sft}
NPROC_PER_NODE=${NPROC_PER_NODE:-4}
NNODES=${NNODES:-1}
BATCH=${BATCH:-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-32}
LR=${LR:-1e-4}
EPOCHS=${EPOCHS:-1}
MAX_LENGTH=${MAX_LENGTH:-2304}
LORA_RANK=${LORA_RANK:-8}
LORA_ALPHA=${LORA_ALPHA:-32}
DTYPE=${DTYPE:-bfloat16}
WARMUP_RATIO=${WARMUP_RATIO:-0.05}
EVAL_STEPS=${EVAL_STEPS:-200}
SAVE_STEPS=${SAVE_STEPS:-200}
DEEPSPEED=${DEEPSPEED:-}                             # the paper's SFT used none

training_flags
mapfile -t launch < <(launch_env)
run env "${launch[@]}" swift sft "${TRAINING_FLAGS[@]}" "$@"
