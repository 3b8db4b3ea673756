#!/usr/bin/env bash
# bench/vault/run.sh: the vault's recovery benchmark. For each fleet size it
# starts a fleet, runs the load generator (go run ./bench/vault) against its
# relay --reps times — registrations, then recoveries at saturation (closed
# loop) and at half the measured saturation rate (open loop) — then, for
# fleets of 3 or more, SIGKILLs one follower and runs it --reps times again;
# and prints the medians.
#
# The fleet is, by default, what an operator runs: `coffer dev --replicas N`,
# N `coffer vault serve` processes (Raft over mutual TLS, sealed disks, the
# relay → vault hop in HTTPS) and the relay in the `coffer dev` process; the
# fleet's CPU is the sum over those processes. --in-process runs the fleet
# in one process instead (go run ./bench/vault/fleet: plain TCP and HTTP),
# which is what --profile needs (one pprof endpoint for the whole fleet).
#
# Usage: bench/vault/run.sh [--replicas "1 3 5"] [--reps 3] [--concurrency 64]
#                           [--accounts 2000] [--duration 15s] [--warmup 3s]
#                           [--out DIR] [--no-follower-down] [--in-process
#                           [--profile] [--fleet-flags "..."]]
#
#   --no-follower-down  skip the runs with one follower killed
#   --in-process   the fleet in one process (bench/vault/fleet)
#   --profile      (with --in-process) also write a CPU profile of the fleet
#                  over each measured run (DIR/replicas=N.run=K.pprof[.open])
#                  and print where its time went (bench/vault/profcat)
#   --fleet-flags  (with --in-process) extra flags for the fleet, e.g.
#                  "-commit-timeout 50ms"
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
inprocess=0
follower_down=1
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
	--in-process) inprocess=1; shift ;;
	--no-follower-down) follower_down=0; shift ;;
	--fleet-flags) fleet_flags="$2"; shift 2 ;;
	--fleet-cpus) fleet_pin=(taskset -c "$2"); shift 2 ;;
	--gen-cpus) gen_pin=(taskset -c "$2"); shift 2 ;;
	-h|--help) sed -n '2,39p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done

if [ "$profile" = 1 ] && [ "$inprocess" = 0 ]; then
	echo "--profile needs --in-process (one pprof endpoint for the whole fleet)" >&2
	exit 2
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-vault-bench.XXXXXX")
out=${out:-$work/out}
mkdir -p "$out"
fleet_pid=""
stop_fleet() {
	if [ -n "$fleet_pid" ] && kill -0 "$fleet_pid" 2>/dev/null; then
		kill "$fleet_pid" 2>/dev/null || true
		wait "$fleet_pid" 2>/dev/null || true
	fi
	fleet_pid=""
}
cleanup() {
	stop_fleet
	rm -rf "$work/bin" "$work"/fleet-*.json "$work"/dev-*
}
trap cleanup EXIT

mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/coffer" ./cmd/coffer && go build -o "$work/bin/fleet" ./bench/vault/fleet &&
	go build -o "$work/bin/loadgen" ./bench/vault && go build -o "$work/bin/profcat" ./bench/vault/profcat)

# start_fleet N: starts a fleet of N replicas; sets fleet_pid and source
# (the generator's flags naming the fleet).
start_fleet() {
	local n=$1 ready
	if [ "$inprocess" = 1 ]; then
		local settings="$work/fleet-$n.json"
		rm -f "$settings"
		# shellcheck disable=SC2086
		"${fleet_pin[@]}" "$work/bin/fleet" -replicas "$n" -settings "$settings" -for 30m $fleet_flags 2>"$out/fleet-replicas=$n.log" &
		fleet_pid=$!
		ready=$settings
		source=(-settings "$settings")
	else
		local dir="$work/dev-$n"
		ready="$work/ready-$n"
		rm -f "$ready"
		"${fleet_pin[@]}" "$work/bin/coffer" dev --replicas "$n" --dir "$dir" --ready-file "$ready" >"$out/fleet-replicas=$n.log" 2>&1 &
		fleet_pid=$!
		source=(-coffer-dev "$dir" -fleet-pid "$fleet_pid")
	fi
	for _ in $(seq 1 600); do
		[ -s "$ready" ] && return 0
		kill -0 "$fleet_pid" 2>/dev/null || { echo "fleet exited; see $out/fleet-replicas=$n.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "fleet did not start in 60 s; see $out/fleet-replicas=$n.log" >&2
	exit 1
}

# kill_follower N: SIGKILLs one follower of the `coffer dev` fleet of N
# replicas (the leader is the replica whose /metrics says so).
kill_follower() {
	local n=$1 dir="$work/dev-$1" i url pid metrics leader=""
	# shellcheck disable=SC1090,SC1091
	. "$dir/env"
	for i in $(seq 1 "$n"); do
		url=$(eval echo "\$COFFER_DEV_REPLICA_${i}_URL")
		metrics=$(curl -sf --max-time 5 --cacert "$COFFER_DEV_FLEET_CA" "$url/metrics" || true)
		if grep -q '^coffer_vault_raft_leader 1' <<<"$metrics"; then
			leader=$i
		fi
	done
	[ -n "$leader" ] || { echo "no leader found among $n replicas" >&2; exit 1; }
	i=$((leader % n + 1))
	pid=$(eval echo "\$COFFER_DEV_REPLICA_${i}_PID")
	echo "== killing follower $i (pid $pid; the leader is replica $leader)"
	kill -KILL "$pid"
	sleep 2
}

# measure N LABEL: --reps generator runs against the running fleet.
measure() {
	local n=$1 label=$2 k prof
	for k in $(seq 1 "$reps"); do
		echo "== $label run $k/$reps (load average $(cut -d' ' -f1-3 /proc/loadavg))"
		prof=()
		if [ "$profile" = 1 ]; then
			prof=(-profile "$out/replicas=$n.run=$k.pprof")
		fi
		timeout 600 "${gen_pin[@]}" "$work/bin/loadgen" "${source[@]}" -accounts "$accounts" -concurrency "$concurrency" \
			-duration "$duration" -warmup "$warmup" -half -label "$label" -json "$out/runs.jsonl" "${prof[@]}" \
			| tee -a "$out/loadgen.log" | grep -E '^(==|  [0-9]|  latency|  fleet|  generator)'
		if [ "$profile" = 1 ]; then
			cp "$work/bin/fleet" "$out/fleet.bin"
		fi
	done
}

mode="coffer dev (one process per replica, mutual TLS)"
[ "$inprocess" = 1 ] && mode="in one process (bench/vault/fleet)"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fleet: $mode; results: $out"
for n in $replicas; do
	start_fleet "$n"
	measure "$n" "replicas=$n"
	if [ "$follower_down" = 1 ] && [ "$inprocess" = 0 ] && [ "$n" -ge 3 ]; then
		kill_follower "$n"
		measure "$n" "replicas=$n, 1 follower down"
	fi
	stop_fleet
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
