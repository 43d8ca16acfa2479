#!/bin/sh
# Build the python-inventory plugin: sh build.sh [OUT.wasm]  (default: python-inventory.wasm)
set -eu
out=${1:-python-inventory.wasm}

# The pinned toolchain, in this folder (skipped once installed).
if ! .venv/bin/componentize-py --version 2>/dev/null | grep -qx 'componentize-py 0.25.1'; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet componentize-py==0.25.1
fi

# The component: app.py and the SDK, against contract 0.2.0's `plugin` world.
.venv/bin/componentize-py -d ../../../wit/v0.2 -w plugin componentize app -p . -p ../../../sdk/python -o "$out"
