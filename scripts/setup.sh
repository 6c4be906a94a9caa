#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment with the tested stack and swift-apo installed.
# Re-running is cheap: nothing is reinstalled while requirements, constraints and pyproject are unchanged.
#   --infer      the inference environment instead: vLLM with the same ms-swift and swift-apo, in .venv-infer,
#                from requirements-infer.txt / constraints-infer.txt (vLLM needs torch 2.14.0; training keeps 2.14.1)
#   VENV=.venv   where the environment goes      PYTHON=python3   the interpreter that creates it
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=requirements.txt constraints=constraints.txt default_venv=.venv
if [ "${1:-}" = --infer ]; then
  requirements=requirements-infer.txt constraints=constraints-infer.txt default_venv=.venv-infer
elif [ -n "${1:-}" ]; then
  echo "usage: bash scripts/setup.sh [--infer]" >&2
  exit 2
fi
VENV=${VENV:-$default_venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.swift-apo-installed"
wanted=$(cat "$requirements" "$constraints" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet -c "$constraints" -r "$requirements" -e .
  echo "$wanted" > "$stamp"
fi
"$VENV/bin/python" -c "import swift_plugin, swift; print(f'swift-apo {swift_plugin.__version__} on ms-swift {swift.__version__}: ready in $VENV')"
