#!/usr/bin/env bash
# bench/smallfiles.sh: many small files. Backs up COUNT small files (default
# 100,000, ~25 MB in all, made by `bench/gen -kind small`, deterministic) to
# a local directory with Coffer and, if installed, restic; then backs up
# again with nothing changed, and restores. For each: wall time (with the
# sync after it), peak RSS (/usr/bin/time -v), and for backups the objects
# in the repository, their bytes (sum of file sizes) and the disk space
# (du). Restores are checked with diff -r. Run by hand, not in CI.
#
# Usage: bench/smallfiles.sh [--count N] [--size SIZE] [--data DIR] [--tools coffer,restic]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=100000 SIZE=25MB DATA="" TOOLS=coffer,restic
while (($#)); do
	case $1 in
	--count) COUNT=${2:?}; shift 2 ;;
	--size) SIZE=${2:?}; shift 2 ;;
	--data) DATA=${2:?}; shift 2 ;;
	--tools) TOOLS=${2:?}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "smallfiles.sh: unknown option $1" >&2; exit 1 ;;
	esac
done
if [[ -z $DATA ]]; then
	DATA=$(mktemp -d /var/tmp/coffer-small.XXXXXX)
	trap 'rm -rf "$DATA"' EXIT
fi
mkdir -p "$DATA/bin"
(cd "$ROOT" && go build -o "$DATA/bin/coffer" ./cmd/coffer && go build -o "$DATA/bin/gen" ./bench/gen)
SRC="$DATA/small"
[[ -d $SRC ]] || "$DATA/bin/gen" -kind small -count "$COUNT" -size "$SIZE" -out "$SRC"
DATABYTES=$(find "$SRC" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "dataset: $COUNT files, $DATABYTES bytes of data; $(nproc) cores; $(go version | cut -d' ' -f3)"
printf '%-8s %-16s %9s %9s %12s %10s %8s\n' tool op seconds maxRSS_MiB objects bytes du_MiB

# measure TOOL OP REPO CMD...: runs CMD under /usr/bin/time -v, then sync.
measure() {
	local tool=$1 op=$2 repo=$3
	shift 3
	sync
	local t0 t1
	t0=$(date +%s.%N)
	/usr/bin/time -v -o "$DATA/time.log" "$@" >"$DATA/cmd.log" 2>&1 || {
		cat "$DATA/cmd.log" >&2
		exit 1
	}
	sync
	t1=$(date +%s.%N)
	local rss objs bytes du
	rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2/1024}' "$DATA/time.log")
	if [[ $repo != - ]]; then
		objs=$(find "$repo" -type f | wc -l)
		bytes=$(find "$repo" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
		du=$(du -sk "$repo" | awk '{printf "%.1f", $1/1024}')
	else
		objs=- bytes=- du=-
	fi
	printf '%-8s %-16s %9.2f %9s %12s %10s %8s\n' "$tool" "$op" "$(echo "$t1 - $t0" | bc)" "$rss" "$objs" "$bytes" "$du"
}

cat_src() { find "$SRC" -type f -print0 | xargs -0 cat >/dev/null; }

if [[ ,$TOOLS, == *,coffer,* ]]; then
	W="$DATA/coffer"
	rm -rf "$W" && mkdir -p "$W"
	"$DATA/bin/coffer" --state "$W/state" -q init --repo "$W/repo" --key-file "$W/key" >/dev/null
	cat_src
	measure coffer backup "$W/repo" bash -c 'cd "$1" && exec "$2" --state "$3" -q backup small' _ "$DATA" "$DATA/bin/coffer" "$W/state"
	measure coffer backup-again "$W/repo" bash -c 'cd "$1" && exec "$2" --state "$3" -q backup small' _ "$DATA" "$DATA/bin/coffer" "$W/state"
	measure coffer restore - "$DATA/bin/coffer" --state "$W/state" -q restore --to "$W/out"
	diff -r "$SRC" "$W/out/small"
	rm -rf "$W"
fi
if [[ ,$TOOLS, == *,restic,* ]] && command -v restic >/dev/null; then
	W="$DATA/restic"
	rm -rf "$W" && mkdir -p "$W"
	export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$W/cache"
	restic -q -r "$W/repo" init >/dev/null
	cat_src
	measure restic backup "$W/repo" bash -c 'cd "$1" && exec restic -q -r "$2" backup small' _ "$DATA" "$W/repo"
	measure restic backup-again "$W/repo" bash -c 'cd "$1" && exec restic -q -r "$2" backup small' _ "$DATA" "$W/repo"
	measure restic restore - restic -q -r "$W/repo" restore latest --target "$W/out"
	diff -r "$SRC" "$W/out/small"
	rm -rf "$W"
fi
