#!/usr/bin/env bash
# The whole APO pipeline: data preparation, SFT, merge, consensus, APO data, APO training, evaluation.
# A stage that finished is marked in WORK_DIR/.stages and skipped next time, so an interrupted run
# resumes where it stopped (the consensus stage also resumes within itself).
#   SOURCE_DATASET  the teachers' dataset (CXR-MAX by default)   IMAGE_ROOT  its image folder
#   BASE_MODEL      the student                                 WORK_DIR    where data/ and output/ go
#   EVAL_FRACTION   patients held out for evaluation (0.05)      SEED        split and source-order seed (42)
#   EVAL_DATASET    classification items (MS-CXR-T style, see docs/evaluation.md); empty: no evaluation stage
#   APO_CHECKPOINT  the APO adapter evaluated (default: the last checkpoint of the newest run under output/apo)
#   EVAL_LOGLIK     1: also score by likelihood (classify --scoring loglik), beside the generative rows of Table 1
#   PAPER           1 (default): after evaluate, the paper's report (shells/paper.sh: its variables apply, e.g.
#                   SAMPLES, ZERO_SHOT_DATASET) in WORK_DIR/reports/paper/paper.md from WORK_DIR/paper.yaml; 0: skip
#   PREP_ARGS (input and column-mapping flags of every data_prep subcommand), SFT_ARGS, MERGE_ARGS, INFER_ARGS,
#   APO_ARGS, EVAL_ARGS (more `swift infer` arguments for evaluation): extra arguments for each stage
# Every launcher's own variables (NPROC_PER_NODE, NNODES, BATCH, LR, ...) apply to its stage.
set -euo pipefail
shells=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=shells/common.sh
source "$shells/common.sh"

SOURCE_DATASET=${SOURCE_DATASET:-MiaoMiaoYang/CXR-MAX}
IMAGE_ROOT=${IMAGE_ROOT:-}
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
WORK_DIR=${WORK_DIR:-.}
EVAL_FRACTION=${EVAL_FRACTION:-0.05}
SEED=${SEED:-42}
EVAL_DATASET=${EVAL_DATASET:-}
PYTHON=${PYTHON:-python}
data=$WORK_DIR/data
out=$WORK_DIR/output
read -ra prep_args <<< "${PREP_ARGS:-}"
read -ra sft_args <<< "${SFT_ARGS:-}"
read -ra merge_args <<< "${MERGE_ARGS:-}"
read -ra infer_args <<< "${INFER_ARGS:-}"
read -ra apo_args <<< "${APO_ARGS:-}"
source_args=(--dataset "$SOURCE_DATASET" --seed "$SEED")
[ -z "$IMAGE_ROOT" ] || source_args+=(--image-root "$IMAGE_ROOT")
mkdir -p "$WORK_DIR/.stages"

# stage NAME COMMAND...: run it unless it finished before
stage() {
  local name=$1 marker=$WORK_DIR/.stages/$1.done
  shift
  if [ -e "$marker" ]; then
    echo "== $name: done before, skipped ($marker)"
    return 0
  fi
  echo "== $name"
  "$@"
  touch "$marker"
}

# the eval split only when it holds rows (a small dataset may hold out no patient)
val_of() {
  if [ -s "$1" ]; then echo "$1"; fi
}

prepare() {
  "$PYTHON" -m data_prep sft "${source_args[@]}" --out "$data/sft.jsonl" --eval-fraction "$EVAL_FRACTION" \
      "${prep_args[@]}"
  "$PYTHON" -m data_prep consensus "${source_args[@]}" --out "$data/consensus_requests.jsonl" "${prep_args[@]}"
  "$PYTHON" -m data_prep report "${source_args[@]}" --out "$WORK_DIR/reports/drift" \
      "${prep_args[@]}"
}

merge() {
  rm -rf "$out/sft-merged"  # an unfinished merge from an interrupted run
  SFT_OUTPUT_DIR=$out/sft MERGED_DIR=$out/sft-merged bash "$shells/merge-SFT.sh" "${merge_args[@]}"
}

# apo_checkpoint: APO_CHECKPOINT, else the last checkpoint of the newest run under output/apo (empty if none)
apo_checkpoint() {
  if [ -n "${APO_CHECKPOINT:-}" ]; then
    echo "$APO_CHECKPOINT"
  elif [ -d "$out/apo" ]; then
    find "$out/apo" -mindepth 2 -maxdepth 2 -type d -name 'checkpoint-*' | sort -V | tail -n 1
  fi
}

evaluate() {
  local reports=$WORK_DIR/reports/eval apo_checkpoint name scoring
  local results=("$reports/SFT.json" "$reports/APO.json") scorings=(generative)
  apo_checkpoint=$(apo_checkpoint)
  if [ -z "$apo_checkpoint" ] || [ ! -d "$apo_checkpoint" ]; then
    fail APO_CHECKPOINT "no APO checkpoint found under '$out/apo' (run the apo stage, shells/APO-Qwen2.5.sh)"
  fi
  if [ "${EVAL_LOGLIK:-0}" = 1 ]; then
    scorings+=(loglik)
    results+=("$reports/SFT.loglik.json" "$reports/APO.loglik.json")
  fi
  for scoring in "${scorings[@]}"; do
    for name in SFT APO; do
      local adapters=()
      [ "$name" = SFT ] || adapters=(--adapters "$apo_checkpoint")
      "$PYTHON" -m evaluation classify --model "$out/sft-merged" "${adapters[@]}" --name "$name" --scoring "$scoring" \
          --dataset "$EVAL_DATASET" --out "$reports" --swift-args "${EVAL_ARGS:-}"
    done
  done
  "$PYTHON" -m evaluation table "${results[@]}" --published --out "$reports/table1.md"
  "$PYTHON" -m evaluation compare "$reports/SFT.json" "$reports/APO.json" --out "$reports/sft_vs_apo.md"
}

paper() {
  MODEL="$out/sft-merged" APO_CHECKPOINT="$(apo_checkpoint)" TABLE1_ANSWERS="$WORK_DIR/reports/eval" \
      REPORT_DATASET="$data/sft.eval.jsonl" TEACHERS_DATASET="$SOURCE_DATASET" PAPER_CONFIG="$WORK_DIR/paper.yaml" \
      PAPER_OUT="$WORK_DIR/reports/paper" PYTHON="$PYTHON" bash "$shells/paper.sh"
}

apo_data() {
  "$PYTHON" -m data_prep apo "${source_args[@]}" --consensus "$data/consensus.jsonl" \
      --requests "$data/consensus_requests.jsonl" --out "$data/apo.jsonl" --eval-fraction "$EVAL_FRACTION" \
      "${prep_args[@]}"
}

stage prepare prepare
stage sft env MODEL="$BASE_MODEL" DATASET="$data/sft.jsonl" VAL_DATASET="$(val_of "$data/sft.eval.jsonl")" \
    OUTPUT_DIR="$out/sft" bash "$shells/SFT-Qwen2.5.sh" "${sft_args[@]}"
stage merge merge
stage consensus env MODEL="$out/sft-merged" REQUESTS="$data/consensus_requests.jsonl" \
    RESULTS="$data/consensus.jsonl" PYTHON="$PYTHON" bash "$shells/consensus-Qwen2.5.sh" "${infer_args[@]}"
stage apo-data apo_data
stage apo env MODEL="$out/sft-merged" DATASET="$data/apo.jsonl" VAL_DATASET="$(val_of "$data/apo.eval.jsonl")" \
    OUTPUT_DIR="$out/apo" bash "$shells/APO-Qwen2.5.sh" "${apo_args[@]}"
if [ -n "$EVAL_DATASET" ]; then
  stage evaluate evaluate
  if [ "${PAPER:-1}" = 1 ]; then stage paper paper; fi
else
  echo "== evaluate: skipped (set EVAL_DATASET to classification items, see docs/evaluation.md)"
fi

cat <<DONE
== APO pipeline finished. Outputs:
  data (SFT, consensus requests and answers, APO rows): $data/
  drift report:                                       $WORK_DIR/reports/drift/drift.md
  SFT run, merged SFT model:                          $out/sft/, $out/sft-merged/
  APO run (checkpoints, logging.jsonl):               $out/apo/
  evaluation (Table 1, SFT vs APO), if EVAL_DATASET:  $WORK_DIR/reports/eval/
  the paper's report (all experiment families):      $WORK_DIR/reports/paper/paper.md
DONE
