#!/usr/bin/env bash
# `DEMO=gym bash scripts/demo.sh`: the drift gym on one seed (the `small` configuration, seed 0): synthetic films
# and seven drifting teachers, a student trained from scratch through the real CLIs (data_prep -> swift sft ->
# swift infer consensus -> data_prep apo -> swift rlhf), the five arms, and a page whose numbers mean something:
# accuracy against known truth. A few minutes (all 3 seeds of `small`: 12 on 2 idle CPU cores).
# `bash scripts/demo.sh` without DEMO runs the CXR-MAX path instead (shells/pipeline.sh on sample_data/), which
# takes the real dataset with one setting (SOURCE_DATASET).   GYM_ARGS: more arguments for
# `python -m benchmarks.drift_gym run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source "${VENV:-.venv}/bin/activate"
out=${WORK_DIR:-output/demo-gym}
read -ra extra <<< "${GYM_ARGS:-}"
python -m benchmarks.drift_gym run --config small --set seeds=0 --out "$out" "${extra[@]}"
sed -n '1,/^## Learning rates/p' "$out/drift_gym.md" | head -n -1
echo "== the whole page: $out/drift_gym.md (chart: $out/drift_gym.png)"
