#!/usr/bin/env bash
# Stage 3 (critique): APO on the merged SFT model, the consensus as chosen and every teacher's trace as
# rejected. Defaults are the paper's recipe; every setting can be overridden from the environment, and
# extra arguments go to `swift rlhf` (the APO options among them: --apo_shared_prefix, --apo_prefix_kernel, ...;
# their APO_* environment variables reach it too).
#   DRY_RUN=1 bash shells/APO-Qwen2.5.sh      prints the command instead of running it
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 NPROC_PER_NODE=8 bash shells/APO-Qwen2.5.sh
set -euo pipefail
# shellcheck source=shells/common.sh
source "$(dirname "$0")/common.sh"

MODEL=${MODEL:-./output/sft-merged}
DATASET=${DATASET:-./data/apo.jsonl}
VAL_DATASET=${VAL_DATASET-./data/apo.eval.jsonl}   # set empty to train without evaluation
OUTPUT_DIR=${OUTPUT_DIR:-./output/apo}
NPROC_PER_NODE=${NPROC_PER_NODE:-4}
NNODES=${NNODES:-1}
BATCH=${BATCH:-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-32}
LR=${LR:-5e-7}
EPOCHS=${EPOCHS:-1}
MAX_LENGTH=${MAX_LENGTH:-4096}
BETA=${BETA:-0.1}                                  # not stated by the paper; ms-swift's DPO default
RPO_ALPHA=${RPO_ALPHA:-}                           # optional NLL weight on the consensus answer
LORA_RANK=${LORA_RANK:-8}
LORA_ALPHA=${LORA_ALPHA:-32}
DTYPE=${DTYPE:-bfloat16}
WARMUP_RATIO=${WARMUP_RATIO:-0.05}
EVAL_STEPS=${EVAL_STEPS:-100}
SAVE_STEPS=${SAVE_STEPS:-100}
DEEPSPEED=${DEEPSPEED-zero2}                       # set empty for none

training_flags
rpo=()
[ -z "$RPO_ALPHA" ] || rpo=(--rpo_alpha "$RPO_ALPHA")

mapfile -t launch < <(launch_env)
run env "${launch[@]}" swift rlhf --rlhf_type apo "${TRAINING_FLAGS[@]}" --beta "$BETA" "${rpo[@]}" "$@"
