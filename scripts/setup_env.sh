#!/usr/bin/env bash
# Create .venv if missing, install the pinned dependencies and gpcore, register the Jupyter
# kernel "gpcore" that papermill uses. Re-runs are cheap: nothing is reinstalled while
# requirements.lock and pyproject.toml are unchanged. Sourced by run_all.sh and run_tests.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPCORE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "gpcore needs Python >= 3.10; set PYTHON=/path/to/python3.11" >&2; exit 1; }
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.gpcore-installed"
WANT="$("$VENV/bin/python" -c 'import hashlib, sys
print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' \
  "$ROOT/requirements.lock" "$ROOT/pyproject.toml")"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing pinned dependencies (requirements.lock)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.lock"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -e "$ROOT"
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name gpcore \
    --display-name "Python (gpcore)" >/dev/null
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND="${MPLBACKEND:-Agg}"
