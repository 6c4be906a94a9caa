# Sourced by the launchers: checks that fail before anything starts, the batch arithmetic, the training flags
# SFT and APO share, DRY_RUN.
# shellcheck shell=bash

# fail VARIABLE MESSAGE
fail() {
  echo "error: $2 (set $1)" >&2
  exit 2
}

# A model is a local folder, or a hub id (org/name). Path-like values (/, ./, ../, ~) must exist.
require_model() {
  local value=$1 variable=$2
  [ -n "$value" ] || fail "$variable" "no model given"
  [ -e "$value" ] && return 0
  case $value in
    /* | ./* | ../* | "~"*) fail "$variable" "model folder '$value' does not exist" ;;
  esac
  [[ $value =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]] || fail "$variable" "'$value' is neither a folder nor a hub id"
}

# A dataset is a local file (ms-swift's path#N sampling allowed) or a hub id; files must exist.
require_dataset() {
  local value=$1 variable=$2 path=${1%#*}
  [ -n "$value" ] || fail "$variable" "no dataset given"
  [ -e "$path" ] && return 0
  case $path in
    /* | ./* | ../* | "~"* | *.jsonl | *.json | *.csv | *.parquet) fail "$variable" "dataset '$path' does not exist" ;;
  esac
}

# grad_accumulation GLOBAL_BATCH PER_DEVICE_BATCH: keeps the global batch whatever the number of GPUs.
grad_accumulation() {
  local world=$((NPROC_PER_NODE * NNODES))
  local per_step=$(($2 * world))
  if [ "$per_step" -gt "$1" ] || [ $(($1 % per_step)) -ne 0 ]; then
    fail GLOBAL_BATCH "global batch $1 is not a multiple of BATCH ($2) x $world processes (NPROC_PER_NODE x NNODES)"
  fi
  echo $(($1 / per_step))
}

# training_flags: checks the launcher's MODEL, DATASET, VAL_DATASET and batch settings, and sets TRAINING_FLAGS to
# the `swift sft` / `swift rlhf` flags both stages take from them (LoRA, precision, schedule, evaluation, saving).
training_flags() {
  local grad_acc
  require_model "$MODEL" MODEL
  require_dataset "$DATASET" DATASET
  grad_acc=$(grad_accumulation "$GLOBAL_BATCH" "$BATCH") || exit
  TRAINING_FLAGS=(--model "$MODEL" --dataset "$DATASET" --split_dataset_ratio 0)
  if [ -n "$VAL_DATASET" ]; then  # set empty to train without evaluation
    require_dataset "$VAL_DATASET" VAL_DATASET
    TRAINING_FLAGS+=(--val_dataset "$VAL_DATASET")
  fi
  TRAINING_FLAGS+=(
    --tuner_type lora --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA" --target_modules all-linear
    --torch_dtype "$DTYPE"
    --num_train_epochs "$EPOCHS" --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size "$BATCH"
    --gradient_accumulation_steps "$grad_acc" --learning_rate "$LR" --max_length "$MAX_LENGTH"
    --warmup_ratio "$WARMUP_RATIO"
    --eval_steps "$EVAL_STEPS" --save_steps "$SAVE_STEPS" --save_total_limit 2 --logging_steps 5
    --output_dir "$OUTPUT_DIR")
  [ -z "$DEEPSPEED" ] || TRAINING_FLAGS+=(--deepspeed "$DEEPSPEED")
}

# The image budget, the paper's by default: MAX_PIXELS 12845056 is Qwen2.5-VL's own limit (16384 tokens of 28 x 28
# pixels); ms-swift turns MAX_PIXELS into the token limit of every Qwen-style family (Qwen2-VL .. Qwen3-VL, Qwen3.5,
# patch 14 or 16), so each sees the same pixels. InternVL: MAX_NUM tiles of 448 x 448 (its default 12); Gemma 3,
# LLaVA-OneVision and GLM-4.1V resize in their own processors (docs/models.md).
export MAX_PIXELS=${MAX_PIXELS:-12845056}

# The launch variables ms-swift reads (torchrun's, the image budget), passed on only when set.
launch_env() {
  local name
  for name in NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR MASTER_PORT CUDA_VISIBLE_DEVICES MAX_PIXELS MAX_NUM; do
    [ -n "${!name:-}" ] && printf '%s=%s\n' "$name" "${!name}"
  done
  return 0
}

# run COMMAND...: run it, or with DRY_RUN=1 print it (shell-quoted) and do nothing.
run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}
