#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it, pinned by requirements.lock.
# Called by make through the stamp file, so it runs again only when pyproject.toml or
# requirements.lock changed.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.install-stamp"

as_root() { [ "$(id -u)" -eq 0 ]; }

if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v "$PYTHON" >/dev/null; then
        echo "error: $PYTHON not found; install Python >= 3.11 (Debian: apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    echo "==> creating $VENV with $($PYTHON --version)"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        # Debian ships venv's ensurepip separately.
        if as_root && command -v apt-get >/dev/null; then
            echo "==> installing python3-venv (apt-get)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
            "$PYTHON" -m venv "$VENV"
        else
            echo "error: '$PYTHON -m venv' failed; install the venv module (Debian: sudo apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi

echo "==> installing the project and its pinned dependencies into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    --constraint requirements.lock --editable '.[dev]'
touch "$STAMP"
