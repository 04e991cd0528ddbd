# Sourced by bin/start and bin/test: make sure the virtual environment exists and holds
# exactly the pinned requirements: the runtime ones (requirements.txt) and the tools that test
# and check them (requirements-dev.txt, which includes the first). A second run reuses it (a
# hash of both files is kept in the venv), so only the first run pays for the install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RGZ_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
  echo "rgzlabel needs Python 3.11 or newer; $PYTHON_BIN is $("$PYTHON_BIN" --version 2>&1)" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating the virtual environment in $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
  echo "==> installing pinned dependencies (requirements.txt, requirements-dev.txt)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -qq --upgrade pip
  "$VENV/bin/python" -m pip install --disable-pip-version-check -qq -r "$ROOT/requirements-dev.txt"
  echo "$want" > "$VENV/.requirements.sha256"
fi
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
