#!/usr/bin/env bash
# The whole locus test suite, from a fresh clone: installs what the tests
# need, checks formatting and lints, runs the API conformance run against a
# live agent, then every unit, property and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "OpenSSL for DTLS (Debian's libssl-dev and pkg-config, which the openssl crate links against)"
if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

step "autotools for DTLSSocket (tinydtls, aiocoap's DTLS client transport), built from source by pip"
if ! command -v autoreconf >/dev/null || ! command -v libtoolize >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq autoconf automake libtool >/dev/null
fi

step "python tools for the conformance run and the real-client tests (venv in target/pyenv)"
if [ ! -x target/pyenv/bin/schemathesis ] || ! cmp -s scripts/requirements-test.txt target/pyenv/.requirements; then
    mkdir -p target
    python3 -m venv target/pyenv
    target/pyenv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
    cp scripts/requirements-test.txt target/pyenv/.requirements
fi

step "MQTT peers for the thing tests (Debian's mosquitto and mosquitto-clients)"
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null || ! command -v mosquitto >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi

step "a CoAP client over DTLS for the LwM2M DTLS tests (Debian's libcoap3-bin: coap-client-gnutls)"
if ! command -v coap-client-gnutls >/dev/null || ! command -v coap-client-notls >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcoap3-bin >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

step "API conformance (OpenAPI validation + schemathesis against a live agent)"
scripts/api-conformance.sh target/debug/locus

step "cargo test"
scripts/test-images.sh  # busybox + image tarball for the runtime driver tests
log=target/cargo-test.log
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntotal: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
