#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment with the tested stack and swift-apo installed.
# Re-running is cheap: nothing is reinstalled while requirements, constraints and pyproject are unchanged.
#   VENV=.venv   where the environment goes      PYTHON=python3   the interpreter that creates it
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.swift-apo-installed"
wanted=$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -r requirements.txt -e .
  echo "$wanted" > "$stamp"
fi
"$VENV/bin/python" -c "import swift_plugin, swift; print(f'swift-apo {swift_plugin.__version__} on ms-swift {swift.__version__}: ready in $VENV')"
