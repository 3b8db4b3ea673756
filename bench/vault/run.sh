#!/usr/bin/env bash
# bench/vault/run.sh: the vault's recovery benchmark. For each fleet size it
# starts a fleet in its own process (go run ./bench/vault/fleet), runs the
# load generator (go run ./bench/vault) against its relay --reps times —
# registrations, then recoveries at saturation (closed loop) and at half the
# measured saturation rate (open loop) — and prints the medians.
#
# Usage: bench/vault/run.sh [--replicas "1 3 5"] [--reps 3] [--concurrency 64]
#                           [--accounts 2000] [--duration 15s] [--warmup 3s]
#                           [--out DIR] [--profile] [--fleet-flags "..."]
#
#   --profile      also write a CPU profile of the fleet over each measured
#                  run (DIR/replicas=N.run=K.pprof[.open]) and print where
#                  its time went (bench/vault/profcat)
#   --fleet-flags  extra flags for the fleet, e.g. "-commit-timeout 50ms"
#   --fleet-cpus LIST, --gen-cpus LIST
#                  pin the fleet and the load generator to CPUs with taskset
#                  (e.g. --fleet-cpus 0,1 --gen-cpus 2-7 on an 8-core machine:
#                  the fleet then has exactly 2 cores of its own, as issue 4's
#                  "5 replicas on a 2-core machine" means)
#
# Every step is bounded in time (the fleet exits after 30 minutes; each
# generator run after 10). Results: DIR/runs.jsonl (one JSON object per
# measured run) and DIR/summary.md.
set -euo pipefail

replicas="1 3 5"
reps=3
concurrency=64
accounts=2000
duration=15s
warmup=3s
out=""
profile=0
fleet_flags=""
fleet_pin=()
gen_pin=()
while [ $# -gt 0 ]; do
	case "$1" in
	--replicas) replicas="$2"; shift 2 ;;
	--reps) reps="$2"; shift 2 ;;
	--concurrency) concurrency="$2"; shift 2 ;;
	--accounts) accounts="$2"; shift 2 ;;
	--duration) duration="$2"; shift 2 ;;
	--warmup) warmup="$2"; shift 2 ;;
	--out) out="$2"; shift 2 ;;
	--profile) profile=1; shift ;;
	--fleet-flags) fleet_flags="$2"; shift 2 ;;
	--fleet-cpus) fleet_pin=(taskset -c "$2"); shift 2 ;;
	--gen-cpus) gen_pin=(taskset -c "$2"); shift 2 ;;
	-h|--help) sed -n '2,26p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-vault-bench.XXXXXX")
out=${out:-$work/out}
mkdir -p "$out"
fleet_pid=""
cleanup() {
	if [ -n "$fleet_pid" ] && kill -0 "$fleet_pid" 2>/dev/null; then
		kill "$fleet_pid" 2>/dev/null || true
		wait "$fleet_pid" 2>/dev/null || true
	fi
	rm -rf "$work/bin" "$work"/fleet-*.json
}
trap cleanup EXIT

mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/fleet" ./bench/vault/fleet && go build -o "$work/bin/loadgen" ./bench/vault && go build -o "$work/bin/profcat" ./bench/vault/profcat)

echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "results: $out"
for n in $replicas; do
	settings="$work/fleet-$n.json"
	rm -f "$settings"
	# shellcheck disable=SC2086
	"${fleet_pin[@]}" "$work/bin/fleet" -replicas "$n" -settings "$settings" -for 30m $fleet_flags 2>"$out/fleet-replicas=$n.log" &
	fleet_pid=$!
	for _ in $(seq 1 300); do
		[ -s "$settings" ] && break
		kill -0 "$fleet_pid" 2>/dev/null || { echo "fleet exited; see $out/fleet-replicas=$n.log" >&2; exit 1; }
		sleep 0.1
	done
	[ -s "$settings" ] || { echo "fleet did not start in 30 s" >&2; exit 1; }
	for k in $(seq 1 "$reps"); do
		echo "== replicas=$n run $k/$reps (load average $(cut -d' ' -f1-3 /proc/loadavg))"
		prof=()
		if [ "$profile" = 1 ]; then
			prof=(-profile "$out/replicas=$n.run=$k.pprof")
		fi
		timeout 600 "${gen_pin[@]}" "$work/bin/loadgen" -settings "$settings" -accounts "$accounts" -concurrency "$concurrency" \
			-duration "$duration" -warmup "$warmup" -half -label "replicas=$n" -json "$out/runs.jsonl" "${prof[@]}" \
			| tee -a "$out/loadgen.log" | grep -E '^(==|  [0-9]|  latency|  fleet)'
		if [ "$profile" = 1 ]; then
			cp "$work/bin/fleet" "$out/fleet.bin"
		fi
	done
	kill "$fleet_pid"
	wait "$fleet_pid" 2>/dev/null || true
	fleet_pid=""
done
"$work/bin/loadgen" -summarize "$out/runs.jsonl" | tee "$out/summary.md"
if [ "$profile" = 1 ]; then
	for p in "$out"/*.pprof "$out"/*.pprof.open; do
		[ -s "$p" ] || continue
		echo
		echo "### $(basename "$p")"
		go tool pprof -traces "$out/fleet.bin" "$p" 2>/dev/null | "$work/bin/profcat"
	done | tee "$out/profiles.md"
fi
