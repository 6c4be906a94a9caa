#!/usr/bin/env bash
# Between stages 1 and 2: merge the SFT LoRA adapter into the base model, as the paper's APO starts
# from the merged SFT model. Extra arguments go to `swift export`.
#   ADAPTER   the checkpoint to merge (default: the last checkpoint of the newest run under SFT_OUTPUT_DIR)
set -euo pipefail
# shellcheck source=shells/common.sh
source "$(dirname "$0")/common.sh"

SFT_OUTPUT_DIR=${SFT_OUTPUT_DIR:-./output/sft}
MERGED_DIR=${MERGED_DIR:-./output/sft-merged}
if [ -z "${ADAPTER:-}" ] && [ -d "$SFT_OUTPUT_DIR" ]; then
  ADAPTER=$(find "$SFT_OUTPUT_DIR" -mindepth 2 -maxdepth 2 -type d -name 'checkpoint-*' | sort -V | tail -n 1)
fi
if [ -z "${ADAPTER:-}" ] || [ ! -d "$ADAPTER" ]; then
  fail ADAPTER "no SFT checkpoint found under '$SFT_OUTPUT_DIR' (run shells/SFT-Qwen2.5.sh)"
fi
[ ! -e "$MERGED_DIR" ] || fail MERGED_DIR "'$MERGED_DIR' already exists; remove it or choose another folder"

run swift export \
    --adapters "$ADAPTER" \
    --merge_lora true \
    --output_dir "$MERGED_DIR" \
    "$@"
