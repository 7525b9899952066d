#!/usr/bin/env bash
# The small-node build: no Wasm driver (wasmtime, cranelift), no Swagger UI
# bundle, code optimised for size. The binary lands in target/small/locus.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --profile small -p locus --no-default-features "$@"
