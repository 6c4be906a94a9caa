#!/usr/bin/env bash
# The whole APO pipeline on the bundled sample (sample_data/: 6 studies x 7 teachers) with a tiny random
# model built locally, on a CPU, in a few minutes. Installs what it needs first (scripts/setup.sh).
#   DEMO_FAMILY   the tiny model's family (default qwen2.5-vl; python tools/tiny_models.py --list), e.g. qwen3-vl
# ms-swift detects the model's type and template itself, as it does for BASE_MODEL=Qwen/Qwen3-VL-8B-Instruct.
# The same shells/pipeline.sh with BASE_MODEL=Qwen/Qwen2.5-VL-7B-Instruct and the real dataset is the
# paper's run. Re-running skips the stages already done; remove WORK_DIR to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
# DEMO=gym: the drift gym instead (a student that learns: synthetic films, known truth; benchmarks/drift_gym/demo.sh)
if [ "${DEMO:-}" = gym ]; then exec bash benchmarks/drift_gym/demo.sh; fi
bash scripts/setup.sh
# shellcheck disable=SC1091
source "${VENV:-.venv}/bin/activate"

export WORK_DIR=${WORK_DIR:-output/demo}
DEMO_FAMILY=${DEMO_FAMILY:-qwen2.5-vl}
tiny_model=$WORK_DIR/tiny-$DEMO_FAMILY
python tools/tiny_models.py "$tiny_model" --family "$DEMO_FAMILY"

cpu_training=(--check_model false --fp16 false --bf16 false --report_to none --dataloader_num_workers 0
              --max_steps 2 --save_steps 2 --eval_steps 2 --logging_steps 1)
# tiny images: 4 image tokens whatever the family's patch size (ms-swift's Qwen-VL preprocessing)
export HF_HUB_OFFLINE=1 MAX_PIXELS=3136 IMAGE_MAX_TOKEN_NUM=4 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export SOURCE_DATASET=sample_data/cxr_max_sample.jsonl BASE_MODEL=$tiny_model EVAL_FRACTION=0.25
export NPROC_PER_NODE=1 BATCH=1 GLOBAL_BATCH=2 DTYPE=float32 DEEPSPEED='' MAX_NEW_TOKENS=32 TEMPERATURE=1
export SFT_ARGS="${cpu_training[*]}" APO_ARGS="${cpu_training[*]}"
# the tiny model's greedy answer is whitespace only, which data_prep apo drops as empty: sample instead
export INFER_ARGS="--torch_dtype float32 --top_k 50 --top_p 1 --seed 0"
export EVAL_DATASET=sample_data/ms_cxr_t_sample.jsonl EVAL_ARGS="$INFER_ARGS --temperature 1 --max_new_tokens 32 --max_batch_size 10"
# the paper's report: 2 samples per item for consistency, the bundled CheXpert-style labels for zero-shot
export SAMPLES=2 SAMPLE_TEMPERATURE=1 ZERO_SHOT_DATASET=sample_data/chexpert_style_labels.csv \
    ZERO_SHOT_IMAGE_ROOT=sample_data
bash shells/pipeline.sh
