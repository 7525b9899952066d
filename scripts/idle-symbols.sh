#!/usr/bin/env bash
# Regenerate crates/locus/idle-symbols.txt: the functions an idle agent runs,
# which the release link lays out together (see crates/locus/build.rs).
#
# 1. links the release binary with a linker map (same code, same names);
# 2. runs an agent on embedded defaults under callgrind, zeroes the counts
#    once it has settled and dumps them after IDLE_SECS of idling;
# 3. names every function of the binary that ran, from the map.
# Needs valgrind (Debian package `valgrind`). Takes a release link and
# about two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECS=${IDLE_SECS:-60}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
# Without the current list, so that the map shows the linker's own order.
LOCUS_NO_SYMBOL_ORDER=1 LOCUS_LINK_MAP="$work/locus.map" cargo build --release -p locus
cp target/release/locus "$work/locus"
port=$((20000 + RANDOM % 20000))
LOCUS_LOG=warn valgrind --tool=callgrind --demangle=no \
  --callgrind-out-file="$work/idle.%p" "$work/locus" agent \
  --listen "127.0.0.1:$port" --gossip "127.0.0.1:$((port + 1))" --data-dir "$work/data" \
  --mqtt 127.0.0.1:0 --lwm2m 127.0.0.1:0 --lwm2m-bootstrap 127.0.0.1:0 \
  --lwm2m-dtls 127.0.0.1:0 --lwm2m-bootstrap-dtls 127.0.0.1:0 >"$work/agent.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
echo "settling 35 s, then idling ${IDLE_SECS} s under callgrind" >&2
sleep 35
callgrind_control -z "$pid" >/dev/null
sleep "$IDLE_SECS"
callgrind_control -d "$pid" >/dev/null
sleep 2
kill "$pid"
wait "$pid" 2>/dev/null || true
dump=$(ls "$work"/idle.*.1)
python3 scripts/idle-symbols/order.py "$dump" "$work/locus.map" locus crates/locus/idle-symbols.txt
echo "wrote crates/locus/idle-symbols.txt; rebuild with: cargo build --release -p locus" >&2
