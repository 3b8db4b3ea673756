#!/usr/bin/env bash
# bench/vault/profile.sh: CPU profiles of every process of a fleet of real
# processes under load — `coffer dev --replicas N` (N `coffer vault serve`
# processes and the relay in the `coffer dev` process) with COFFER_PPROF on
# loopback — at saturation (closed loop) and at a fixed rate (open loop),
# sorted by bench/vault/profcat: the whole fleet, then each process.
#
# Usage: bench/vault/profile.sh [--replicas 5] [--rate 110] [--seconds 12] [--out DIR]
#
# Each load run lasts --seconds + 8 s (3 s warm-up); the profiles cover
# --seconds in its middle. Everything binds 127.0.0.1 and is stopped at exit.
set -euo pipefail

replicas=5
rate=110
seconds=12
out=""
while [ $# -gt 0 ]; do
	case "$1" in
	--replicas) replicas="$2"; shift 2 ;;
	--rate) rate="$2"; shift 2 ;;
	--seconds) seconds="$2"; shift 2 ;;
	--out) out="$2"; shift 2 ;;
	-h|--help) sed -n '2,11p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-vault-profile.XXXXXX")
out=${out:-$work/out}
mkdir -p "$out"
dev_pid=""
cleanup() {
	if [ -n "$dev_pid" ]; then
		kill "$dev_pid" 2>/dev/null || true
		wait "$dev_pid" 2>/dev/null || true
	fi
	rm -rf "$work/bin" "$work/dev"
}
trap cleanup EXIT

mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/coffer" ./cmd/coffer && go build -o "$work/bin/loadgen" ./bench/vault &&
	go build -o "$work/bin/profcat" ./bench/vault/profcat)
cp "$work/bin/coffer" "$out/coffer.bin"

COFFER_PPROF=127.0.0.1:0 "$work/bin/coffer" dev --replicas "$replicas" --dir "$work/dev" \
	--ready-file "$work/ready" >"$out/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 600); do
	[ -s "$work/ready" ] && break
	kill -0 "$dev_pid" 2>/dev/null || { echo "coffer dev exited; see $out/dev.log" >&2; exit 1; }
	sleep 0.1
done
[ -s "$work/ready" ] || { echo "coffer dev did not start in 60 s; see $out/dev.log" >&2; exit 1; }
sleep 2
# Each process logs where it serves pprof; the replicas log to their own files.
mapfile -t addrs < <(cat "$out/dev.log" "$work"/dev/*.log "$work"/dev/*/*.log 2>/dev/null |
	grep -h 'serving net/http/pprof' | grep -o '127\.0\.0\.1:[0-9]*' | sort -u)
echo "pprof endpoints: ${addrs[*]}"
[ "${#addrs[@]}" -eq $((replicas + 1)) ] || { echo "expected $((replicas + 1)) pprof endpoints" >&2; exit 1; }

# profile NAME: one CPU profile per process, concurrently.
profile() {
	local i=0 pids=() a
	for a in "${addrs[@]}"; do
		i=$((i + 1))
		curl -sf --max-time $((seconds + 10)) -o "$out/$1.p$i.pprof" "http://$a/debug/pprof/profile?seconds=$seconds" &
		pids+=($!)
	done
	wait "${pids[@]}"
}

# run NAME ARGS...: a load run with profiles in its middle; prints its result.
run() {
	local name=$1 lg
	shift
	timeout 600 "$work/bin/loadgen" -coffer-dev "$work/dev" -accounts 2000 -duration $((seconds + 5))s -warmup 3s "$@" >"$out/$name.log" 2>&1 &
	lg=$!
	# the generator prints each phase when it ends: registrations first,
	# then the recoveries' 3 s warm-up and the measured run
	for _ in $(seq 1 1200); do
		grep -q '^== registrations' "$out/$name.log" 2>/dev/null && break
		sleep 0.1
	done
	sleep 4
	profile "$name"
	wait "$lg"
	grep -E '^==|ok in|latency|fleet process|generator' "$out/$name.log"
}

run saturation -concurrency 64
run open -rate "$rate"

for name in saturation open; do
	# recoveries per second × profile seconds = recoveries the profiles cover
	ops=$(grep -m1 -A1 '^== recoveries' "$out/$name.log" | grep -o '[0-9.]* /s' | head -1 | cut -d' ' -f1)
	ops=$(awk -v r="$ops" -v s="$seconds" 'BEGIN { printf "%d", r * s }')
	echo
	echo "### $name: the whole fleet ($ops recoveries in the profiles)"
	go tool pprof -proto "$out/$name".p*.pprof >"$out/$name.merged.pb" 2>/dev/null
	go tool pprof -traces "$out/coffer.bin" "$out/$name.merged.pb" 2>/dev/null | "$work/bin/profcat" -ops "$ops"
	for p in "$out/$name".p*.pprof; do
		echo
		echo "#### $(basename "$p"): $(go tool pprof -top "$out/coffer.bin" "$p" 2>/dev/null | grep -m1 'Total samples')"
		go tool pprof -traces "$out/coffer.bin" "$p" 2>/dev/null | "$work/bin/profcat" -ops "$ops" | awk 'NR <= 8 || /^\| total/'
	done
done | tee "$out/profiles.md"
echo "profiles and logs: $out"
