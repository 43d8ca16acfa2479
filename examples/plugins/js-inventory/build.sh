#!/bin/sh
# Build the js-inventory plugin: sh build.sh [OUT.wasm]  (default: js-inventory.wasm)
set -eu
out=${1:-js-inventory.wasm}

# The pinned toolchain (componentize-js, esbuild) and the SDK, into node_modules/: once, and
# again only when package-lock.json changes.
if ! cmp -s package-lock.json node_modules/.installed-lock; then
    npm ci --ignore-scripts --no-audit --no-fund
    cp package-lock.json node_modules/.installed-lock
fi

# One ES module of the plugin and the SDK (the contract's imports stay imports).
node_modules/.bin/esbuild src/index.js --bundle --format=esm --platform=neutral \
    --external:'replicante:*' --log-level=warning --outfile=build/plugin.js

# The component: world `plugin` of replicante:platform@0.2.0, without wasi:http.
node_modules/.bin/componentize-js build/plugin.js --wit ../../../wit/v0.2 --world-name plugin \
    --disable http fetch-event --out "$out"
