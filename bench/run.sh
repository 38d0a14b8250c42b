#!/usr/bin/env bash
# Reproducible measurements on loopback, one command each:
#
#   bench/run.sh node     one node: issue, consume, rotate, lookup and
#                         introspect from 64 clients
#   bench/run.sh nonce    nonce checks through the API against the same
#                         add() made directly to the same memcached
#   bench/run.sh cluster  three nodes: issue, consume and rotate from 64
#                         clients spread over all nodes; lookups and
#                         introspection on a follower
#   bench/run.sh route    the primary-DC router's overhead: the same GET
#                         from 64 clients straight to an upstream and
#                         through tokenstore route, alternated in one run
#
# DURATION (default 10s) and CLIENTS (default 64) tune a run. Servers are
# started on free loopback ports and stopped by their pids.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-node}
duration=${DURATION:-10s}
clients=${CLIENTS:-64}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/tokenstore" ./cmd/tokenstore
go build -o "$work/tokenstore-bench" ./cmd/tokenstore-bench
ts="$work/tokenstore"
tb="$work/tokenstore-bench"

# port: a free loopback port below the ephemeral range.
port() {
	python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    p = random.randrange(10000, low)
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", p)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

# node NAME ARGS...: start a node with its own data dir and log.
node() {
	local name=$1; shift
	"$ts" serve --data-dir "$work/$name" --node-id "$name" --log-level warn "$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
}

ready() {
	for _ in $(seq 300); do
		curl -sf "http://$1/readyz" >/dev/null && return 0
		sleep 0.1
	done
	echo "node $1 not ready" >&2
	cat "$work"/*.log >&2
	exit 1
}

bench() { "$tb" run --clients "$clients" --duration "$duration" "$@"; }

case "$mode" in
node)
	api=127.0.0.1:$(port)
	node n1 --api-addr "$api" --raft-addr 127.0.0.1:$(port)
	ready "$api"
	bench --addr "http://$api" --workload issue,consume,rotate,lookup,introspect
	;;
nonce)
	command -v memcached >/dev/null || { echo "memcached is not installed (make deps)" >&2; exit 1; }
	mc=127.0.0.1:$(port)
	memcached -l 127.0.0.1 -p "${mc#*:}" -U 0 -t 2 -m 256 -u "$(id -un)" &
	pids+=($!)
	api=127.0.0.1:$(port)
	node n1 --api-addr "$api" --raft-addr 127.0.0.1:$(port) --memcached "$mc"
	ready "$api"
	bench --addr "http://$api" --memcached "$mc" --workload nonce,memcached
	;;
cluster)
	apis=()
	gossip=()
	for i in 1 2 3; do
		apis+=(127.0.0.1:$(port))
		gossip+=(127.0.0.1:$(port))
	done
	for i in 0 1 2; do
		node "n$((i + 1))" --api-addr "${apis[$i]}" --raft-addr 127.0.0.1:$(port) \
			--gossip-addr "${gossip[$i]}" --gossip-lan-addr 127.0.0.1:$(port) \
			--bootstrap-expect 3 --join "${gossip[$(((i + 1) % 3))]}"
	done
	for a in "${apis[@]}"; do ready "$a"; done
	all=$(printf 'http://%s,' "${apis[@]}")
	bench --addr "${all%,}" --workload issue,consume,rotate
	leader=$(curl -s "http://${apis[0]}/v1/cluster" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["leader"])')
	follower=
	for i in 0 1 2; do
		[ "n$((i + 1))" != "$leader" ] && follower=${apis[$i]} && break
	done
	echo "reads on follower $follower (leader $leader):"
	bench --addr "http://$follower" --workload lookup,introspect
	;;
route)
	up=127.0.0.1:$(port)
	"$tb" echo --listen "$up" --dc a >"$work/echo.log" 2>&1 &
	pids+=($!)
	rt=127.0.0.1:$(port)
	"$ts" route --listen "$rt" --local-dc a --upstream "a=http://$up" --primary-dc a --log-level warn >"$work/route.log" 2>&1 &
	pids+=($!)
	for u in "$up" "$rt"; do
		for _ in $(seq 300); do
			curl -sf -o /dev/null "http://$u/wiki/Main_Page" && break
			sleep 0.1
		done
	done
	"$tb" route --direct "http://$up" --via "http://$rt" --path /wiki/Main_Page --clients "$clients" --duration "$duration"
	;;
*)
	echo "usage: bench/run.sh node|nonce|cluster|route" >&2
	exit 2
	;;
esac
