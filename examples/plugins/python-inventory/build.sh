#!/bin/sh
# Build the python-inventory plugin: sh build.sh [OUT.wasm]  (default: python-inventory.wasm)
set -eu
out=${1:-python-inventory.wasm}
wit=../../../wit/v0.2
sdk=../../../sdk/python

# Up to date: nothing to do. (componentize-py's output differs from one build to the next, and a
# new component costs the gateway a new compilation, so do not rebuild for nothing.)
if [ -f "$out" ] && [ -z "$(find build.sh ./*.py "$sdk/platform_gateway_sdk" "$wit" -newer "$out" \( -name '*.py' -o -name '*.wit' -o -name build.sh \) | head -n 1)" ]; then
    exit 0
fi

# The pinned toolchain, in this folder (skipped once installed).
if ! .venv/bin/componentize-py --version 2>/dev/null | grep -qx 'componentize-py 0.25.1'; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet componentize-py==0.25.1
fi

# The component: app.py and the SDK, against contract 0.2.0's `plugin` world.
.venv/bin/componentize-py -d "$wit" -w plugin componentize app -p . -p "$sdk" -o "$out"
