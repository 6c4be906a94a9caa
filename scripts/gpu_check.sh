#!/usr/bin/env bash
# Does swift-apo work on this GPU stack, and how fast is it? One command, one results folder, about 8 minutes
# on one H100/H200:
#   bash scripts/gpu_check.sh [--full] [--profile] [--family F] [--out DIR]   # DIR default results/gpu_check
#     --family qwen3-vl (Qwen3-VL-8B) or qwen3.5 (Qwen3.5-9B) instead of the paper's Qwen2.5-VL-7B in the 7B bench
#   bash scripts/gpu_check.sh --cpu --out /tmp/gc       # the same at tiny scale on the CPU (tries the script)
#   bash scripts/gpu_check.sh --fetch-wheels DIR        # download the overlay wheels (below) for an offline machine
#
# Stages, each into DIR: env.txt (stack, GPU, the attention kernels at the 7B head layout), cuda_tests.log (every
# CUDA test: the tests whose name says cuda), kernels_*.md (benchmarks/bench_shared_prefix.py: every kernel of the
# shared-prefix forward at the CXR-MAX shape and with long answers, the model loaded once per shape), b7/ (the
# Qwen2.5-VL-7B-scale swift rlhf bench: (a) APO default, (b) APO plain path, (c) stock DPO; LoRA, batch 1 and 2;
# --full adds full tuning under ZeRO-3), with --profile profile.md (one 7B APO step under torch.profiler: time
# per phase, module, recomputation and kernel; about a minute more), and summary.md with all of it. Resumable: a stage that finished is not
# run again (delete DIR/.done-STAGE to redo one); the 7B bench keeps its finished runs. A stage that fails or runs
# out of time is logged and the next one runs. Knobs: DEADLINE_S (default 480), PYTHON, WHEELS, SITE.
#
# The stack: the python that imports ms-swift (PYTHON, else .venv/bin/python from scripts/setup.sh, else python3).
# On an image with its own torch and transformers and no ms-swift, the overlay packages below are installed
# with --no-deps into SITE (default /tmp/swift-apo-site) at the versions of constraints.txt, from the wheels in
# WHEELS (default .whl) when there are any, else from the package index; the checkout need not be pip-installed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OVERLAY=(ms-swift trl peft datasets modelscope modelscope-hub qwen-vl-utils addict binpacking dacite dill fsspec
         importlib-metadata json-repair multiprocess pydantic pydantic-core annotated-types typing-inspection
         typing-extensions cffi cryptography pycparser)

OUT=results/gpu_check DEVICE=cuda FULL=() PROFILE='' FAMILY=qwen2.5-vl
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --full) FULL=(--full); shift ;;
    --profile) PROFILE=1; shift ;;
    --family) FAMILY=$2; shift 2 ;;
    --cpu) DEVICE=cpu; shift ;;
    --fetch-wheels) FETCH=$2; shift 2 ;;
    *) echo "usage: bash scripts/gpu_check.sh [--full] [--profile] [--cpu] [--family F] [--out DIR] | --fetch-wheels DIR" >&2
       exit 2 ;;
  esac
done

pinned() {  # the overlay as name==version from constraints.txt (which spells names with - or _)
  local name version
  for name in "${OVERLAY[@]}"; do
    version=$(grep -iE "^${name//-/[-_.]}==" constraints.txt | cut -d= -f3)
    [ -n "$version" ] || { echo "constraints.txt pins no $name" >&2; return 1; }
    echo "$name==$version"
  done
}

if [ -n "${FETCH:-}" ]; then
  pinned > /tmp/swift-apo-overlay.txt || exit 1
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$FETCH" -r /tmp/swift-apo-overlay.txt
fi

DEADLINE_S=${DEADLINE_S:-480}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/swift-apo-site}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
T0=$SECONDS
log() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$LOG"; }
left() { echo $((DEADLINE_S - (SECONDS - T0))); }

# stage NAME CAP_S STDOUT STDERR CMD...: CMD under a time limit (the cap or what is left), its output into the two
# files (the same file for both is fine), unless NAME finished in an earlier call.
stage() {
  local name=$1 cap=$2 stdout=$3 stderr=$4 limit start=$SECONDS rc
  shift 4
  if [ -e "$OUT/.done-$name" ]; then log "$name: done in an earlier call"; return 0; fi
  limit=$(( cap < $(left) ? cap : $(left) ))
  if [ "$limit" -lt 10 ]; then log "$name: skipped, ${limit} s left"; return 0; fi
  log "$name: start (limit $limit s)"
  if [ "$stdout" = "$stderr" ]; then
    timeout -k 15 "$limit" "$@" >"$stdout" 2>&1
  else
    timeout -k 15 "$limit" "$@" >"$stdout" 2>"$stderr"
  fi
  rc=$?
  log "$name: exit $rc$([ $rc = 124 ] && echo ' (timed out)') after $((SECONDS - start)) s"
  [ $rc = 0 ] && touch "$OUT/.done-$name"
  return 0
}

# --- the stack ---------------------------------------------------------------------------------------------------
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if ! "$PYTHON" -c 'import swift, trl' 2>/dev/null; then
  pinned > "$OUT/overlay.txt" || exit 1
  if [ "$(cat "$SITE/.overlay" 2>/dev/null)" != "$(cat "$OUT/overlay.txt")" ]; then
    rm -rf "$SITE"
    from=(--index-url "${PIP_INDEX_URL:-https://pypi.org/simple}")
    ls "$WHEELS"/*.whl >/dev/null 2>&1 && from=(--no-index --find-links "$WHEELS")
    "$PYTHON" -m pip install -q --no-deps --no-compile --no-cache-dir --target "$SITE" "${from[@]}" \
      -r "$OUT/overlay.txt" >>"$LOG" 2>&1 || { log "installing the overlay into $SITE failed (see $LOG)"; exit 1; }
    cp "$OUT/overlay.txt" "$SITE/.overlay"
  fi
  export PYTHONPATH=$ROOT:$SITE${PYTHONPATH#"$ROOT"}
  log "ms-swift and friends from $SITE on top of $("$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
fi
log "gpu_check on $(hostname), $DEVICE, python $PYTHON, results in $OUT"

if [ "$DEVICE" = cuda ]; then
  cxr_max_shape=()  # the benchmark's defaults: P ~ 1,000 tokens (961 image), K = 7 answers of 350
  long_shape=(--prompt-tokens 500 --answer-tokens 3500)
  b7=(--device cuda --family "$FAMILY" --variants abc --batch-sizes "1,2" --warmup 1 --steps 2
      --peak-tflops "${PEAK_TFLOPS:-989}" "${FULL[@]}")
  kernel_common=(--device cuda --warmup 1 --steps 3)
else  # the tiny stand-in: flash has no CPU kernel and flex no CPU backward, so both report why they did not run
  cxr_max_shape=(--prompt-tokens 200 --answer-tokens 40)
  long_shape=(--prompt-tokens 100 --answer-tokens 400)
  b7=(--device cpu --family "$FAMILY" --scale tiny --variants abc --batch-sizes "1,2" --warmup 1 --steps 1)
  kernel_common=(--device cpu --hidden-size 64 --num-layers 2 --vision-depth 1 --image-side 112 --warmup 0 --steps 1
                 --one-process)
fi

# The 7B-scale model (17-19 GB of random bf16 weights) builds in the background while env.txt and the tests run.
if [ ! -e "$OUT/.done-b7" ]; then
  "$PYTHON" benchmarks/bench_7b_cli.py "${b7[@]}" --out "$OUT/b7" --build-only >"$OUT/b7_build.log" 2>&1 &
  BUILD=$!
fi

stage env 90 "$OUT/env.txt" "$OUT/env.txt" "$PYTHON" benchmarks/gpu_env_report.py --device "$DEVICE"
stage cuda_tests 180 "$OUT/cuda_tests.log" "$OUT/cuda_tests.log" \
  "$PYTHON" -m pytest -p swift_plugin.autoload -p no:cacheprovider -rs -v --durations 0 -k cuda tests/
[ -n "${BUILD:-}" ] && { wait "$BUILD"; log "7B model build: exit $? ($(tail -1 "$OUT/b7_build.log"))"; }

kernel_bench=("$PYTHON" benchmarks/bench_shared_prefix.py "${kernel_common[@]}" --variants C --attn "flash,dense,plain,flex"
              --model-dir "$OUT/kernel_model")
stage kernels_cxr_max 80 "$OUT/kernels_cxr_max.md" "$OUT/kernels_cxr_max.log" "${kernel_bench[@]}" "${cxr_max_shape[@]}"
stage kernels_long 80 "$OUT/kernels_long.md" "$OUT/kernels_long.log" "${kernel_bench[@]}" "${long_shape[@]}"
reserve=$([ -n "$PROFILE" ] && echo 100 || echo 15)  # seconds kept for what follows the 7B bench
stage b7 $(( $(left) - reserve )) "$OUT/b7.log" "$OUT/b7.log" \
  "$PYTHON" benchmarks/bench_7b_cli.py "${b7[@]}" --out "$OUT/b7" --resume
if [ -n "$PROFILE" ]; then  # the (a) layout's step on the bench's model: 7B on cuda, tiny on the CPU
  model=$OUT/b7/model-$FAMILY-$([ "$DEVICE" = cuda ] && echo 7b || echo tiny)
  stage profile 90 "$OUT/profile.md" "$OUT/profile.md" "$PYTHON" benchmarks/bench_shared_prefix.py "${kernel_common[@]}" \
    "${cxr_max_shape[@]}" --variants C --attn "$([ "$DEVICE" = cuda ] && echo flash || echo dense)" --model "$model" --profile
fi

{
  echo "# swift-apo GPU check, $(date -u +%F), $DEVICE, $FAMILY"
  echo; echo '## Stack'; echo '```'
  grep -E '^(python |torch |transformers |ms-swift |peft |trl |GPU |swift-apo |  )' "$OUT/env.txt"
  echo '```'; echo; echo '## CUDA tests'; echo '```'
  grep -E '(PASSED|FAILED|SKIPPED|ERROR)' "$OUT/cuda_tests.log" | grep -v '^(tests|=)' | tail -30
  tail -1 "$OUT/cuda_tests.log"
  echo '```'; echo; echo '## Shared-prefix kernels (benchmarks/bench_shared_prefix.py)'
  cat "$OUT/kernels_cxr_max.md" "$OUT/kernels_long.md"; grep -hE ' failed' "$OUT"/kernels_*.log
  echo; echo '## 7B swift rlhf bench (benchmarks/bench_7b_cli.py)'
  cat "$OUT/b7/results.md" 2>/dev/null || echo "no results: see $OUT/b7.log"
  [ -z "$PROFILE" ] || { echo; echo '## Profile of one step'; grep -E '^(\||profile of)' "$OUT/profile.md"; }
  echo; echo '## Timeline'; echo '```'; cat "$LOG"; echo '```'
} >"$OUT/summary.md" 2>&1
log "done: $OUT/summary.md"
