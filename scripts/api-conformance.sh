#!/usr/bin/env bash
# Start a real agent on a free loopback port and check its API against its
# own OpenAPI document: the document must validate, and schemathesis must
# find no server error, no undocumented status, content type or shape.
# Usage: scripts/api-conformance.sh [path/to/locus]   (MAX_TIME=seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/locus}
max_time=${MAX_TIME:-30}
py=target/pyenv/bin

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gossip=$(python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bin=$(realpath "$bin")
# From a scratch directory, so that a generated relative `source` cannot name
# a file of the repository.
(cd "$data" && exec "$bin" agent --data-dir "$data/node" --listen "127.0.0.1:$port" --gossip "127.0.0.1:$gossip" --mqtt 127.0.0.1:0 --lwm2m 127.0.0.1:0 --lwm2m-bootstrap 127.0.0.1:0 --lwm2m-dtls 127.0.0.1:0 --lwm2m-bootstrap-dtls 127.0.0.1:0) >"$data/agent.log" 2>&1 &
pid=$!
cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "--- agent log (last 40 lines) ---" >&2
        tail -40 "$data/agent.log" >&2 || true
        echo "--- workloads ---" >&2
        curl -fsS -H "Authorization: Bearer $(cat "$data/node/admin.token")" "http://127.0.0.1:$port/api/v1/workloads" >&2 || true
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$data/agent.log"; echo "agent died" >&2; exit 1; }
    sleep 0.1
done

curl -fsS "http://127.0.0.1:$port/api/v1/openapi.json" -o "$data/openapi.json"
"$py/openapi-spec-validator" "$data/openapi.json"
# With the local admin token the agent made on its first start: every
# operation is reached, and the auth check sees each refused without it.
token=$(cat "$data/node/admin.token")
"$py/schemathesis" run "http://127.0.0.1:$port/api/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks all --max-time "$max_time" --seed 1 --no-color

# The agent must have survived every generated request.
kill -0 "$pid"
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
echo "api conformance: ok"
