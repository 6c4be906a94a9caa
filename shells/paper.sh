#!/usr/bin/env bash
# Stage after APO: the paper's experiment families (Table 1, report generation, chain-of-thought consistency,
# students beside their teachers, zero-shot generalization) in one report, `python -m evaluation paper`.
# Writes PAPER_CONFIG from the settings below unless that file exists (then it is used as it is: edit it to add
# teachers' answer files or datasets, see evaluation/paper.example.yaml). Resumable: a finished step is kept.
#   MODEL             the merged SFT model (the SFT row; APO's base)      APO_CHECKPOINT  the APO adapter
#   EVAL_DATASET      Table 1 and consistency items (MS-CXR-T JSONL or the official CSV)
#   TABLE1_ANSWERS    folder of swift infer answers already made for Table 1 (<name>.answers.jsonl), reused
#   REPORT_DATASET    data_prep's eval rows (sft.eval.jsonl): report generation, and the students' answers
#   TEACHERS_DATASET  the teachers' traces (CXR-MAX): teacher consistency and the drift report with students
#   ZERO_SHOT_DATASET a CheXpert / NIH-style labels CSV (optional), ZERO_SHOT_IMAGE_ROOT its image folder
#   SAMPLES, SAMPLE_TEMPERATURE  consistency sampling; MAX_NEW_TOKENS; EVAL_ARGS more `swift infer` arguments
set -euo pipefail
# shellcheck source=shells/common.sh
source "$(dirname "$0")/common.sh"

MODEL=${MODEL:-./output/sft-merged}
APO_CHECKPOINT=${APO_CHECKPOINT:-}
EVAL_DATASET=${EVAL_DATASET:-}
TABLE1_ANSWERS=${TABLE1_ANSWERS:-}
REPORT_DATASET=${REPORT_DATASET:-./data/sft.eval.jsonl}
TEACHERS_DATASET=${TEACHERS_DATASET:-MiaoMiaoYang/CXR-MAX}
IMAGE_ROOT=${IMAGE_ROOT:-}
ZERO_SHOT_DATASET=${ZERO_SHOT_DATASET:-}
ZERO_SHOT_IMAGE_ROOT=${ZERO_SHOT_IMAGE_ROOT:-}
SAMPLES=${SAMPLES:-5}
SAMPLE_TEMPERATURE=${SAMPLE_TEMPERATURE:-0.7}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-512}
PAPER_CONFIG=${PAPER_CONFIG:-./paper.yaml}
PAPER_OUT=${PAPER_OUT:-./reports/paper}
PYTHON=${PYTHON:-python}

# q VALUE: VALUE as a YAML single-quoted string
q() { printf "'%s'" "${1//\'/\'\'}"; }

# answers NAME: the model's Table 1 answers line, when TABLE1_ANSWERS holds them
answers() {
  local file=$TABLE1_ANSWERS/$1.answers.jsonl
  if [ -n "$TABLE1_ANSWERS" ] && [ -s "$file" ]; then echo "    answers: {table1: $(q "$file")}"; fi
}

if [ ! -e "$PAPER_CONFIG" ]; then
  require_model "$MODEL" MODEL
  if [ -z "$APO_CHECKPOINT" ] || [ ! -d "$APO_CHECKPOINT" ]; then
    fail APO_CHECKPOINT "no APO checkpoint folder given ('$APO_CHECKPOINT')"
  fi
  require_dataset "$EVAL_DATASET" EVAL_DATASET
  tmp=$(mktemp "$PAPER_CONFIG.XXXXXX")
  {
    echo "# written by shells/paper.sh; edit it and rerun (a finished step is kept). Format: evaluation/paper.example.yaml"
    echo "swift_args: $(q "${EVAL_ARGS:-}")"
    echo "max_new_tokens: $MAX_NEW_TOKENS"
    echo "baseline: SFT"
    echo "models:"
    echo "  SFT:"
    echo "    model: $(q "$MODEL")"
    answers SFT
    echo "  APO:"
    echo "    model: $(q "$MODEL")"
    echo "    adapters: [$(q "$APO_CHECKPOINT")]"
    answers APO
    echo "table1: {dataset: $(q "$EVAL_DATASET")}"
    if [ -s "$REPORT_DATASET" ]; then echo "report_generation: {dataset: $(q "$REPORT_DATASET")}"; fi
    echo "consistency:"
    echo "  dataset: $(q "$EVAL_DATASET")"
    echo "  samples: $SAMPLES"
    echo "  temperature: $SAMPLE_TEMPERATURE"
    echo "  teachers: $(q "$TEACHERS_DATASET")"
    echo "  teachers_name: CXR-MAX"
    [ -z "$IMAGE_ROOT" ] || echo "  image_root: $(q "$IMAGE_ROOT")"
    echo "students:"
    echo "  dataset: $(q "$TEACHERS_DATASET")"
    [ -z "$IMAGE_ROOT" ] || echo "  image_root: $(q "$IMAGE_ROOT")"
    if [ -n "$ZERO_SHOT_DATASET" ]; then
      echo "generalization:"
      echo "  zero-shot: {dataset: $(q "$ZERO_SHOT_DATASET"), image_root: $(q "${ZERO_SHOT_IMAGE_ROOT:-.}")}"
    fi
  } > "$tmp"
  mv "$tmp" "$PAPER_CONFIG"
  echo "paper.sh: wrote $PAPER_CONFIG"
fi
"$PYTHON" -m evaluation paper --config "$PAPER_CONFIG" --out "$PAPER_OUT"
