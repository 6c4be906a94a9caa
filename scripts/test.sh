#!/usr/bin/env bash
# The test suite, CPU only: installs what it needs (scripts/setup.sh), then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k loss`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec "${VENV:-.venv}/bin/python" -m pytest "$@"
