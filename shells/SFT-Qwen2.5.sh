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

require_model "$MODEL" MODEL
require_dataset "$DATASET" DATASET
GRAD_ACC=$(grad_accumulation "$GLOBAL_BATCH" "$BATCH")
validation=(--split_dataset_ratio 0)
if [ -n "$VAL_DATASET" ]; then
  require_dataset "$VAL_DATASET" VAL_DATASET
  validation+=(--val_dataset "$VAL_DATASET")
fi
deepspeed=()
[ -z "$DEEPSPEED" ] || deepspeed=(--deepspeed "$DEEPSPEED")

mapfile -t launch < <(launch_env)
run env "${launch[@]}" swift sft \
    --model "$MODEL" \
    --dataset "$DATASET" \
    "${validation[@]}" \
    --tuner_type lora \
    --lora_rank "$LORA_RANK" \
    --lora_alpha "$LORA_ALPHA" \
    --target_modules all-linear \
    --torch_dtype "$DTYPE" \
    --num_train_epochs "$EPOCHS" \
    --per_device_train_batch_size "$BATCH" \
    --per_device_eval_batch_size "$BATCH" \
    --gradient_accumulation_steps "$GRAD_ACC" \
    --learning_rate "$LR" \
    --max_length "$MAX_LENGTH" \
    --warmup_ratio "$WARMUP_RATIO" \
    --eval_steps "$EVAL_STEPS" \
    --save_steps "$SAVE_STEPS" \
    --save_total_limit 2 \
    --logging_steps 5 \
    "${deepspeed[@]}" \
    --output_dir "$OUTPUT_DIR" \
    "$@"
