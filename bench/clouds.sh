#!/usr/bin/env bash
# bench/clouds.sh: Coffer and restic side by side, in one run, on a local
# directory, on S3 over loopback (versitygw on 127.0.0.1) and on the same S3
# behind a link with injected latency (internal/latencyproxy, 20 ms round
# trip by default). Issue 13, items 5 and 6; see BENCHMARKS.md, "Many small
# files: packs". Run by hand, not in CI.
#
# For each dataset, target and tool: a fresh repository (untimed init), a
# backup, for the small files a second backup with nothing changed, and a
# restore checked with diff -r. Each line: wall time including a sync after
# the command (so the local repository, or versitygw's posix directory, is
# on disk), peak RSS (/usr/bin/time -v; the tool only, not versitygw), and
# after backups the objects in the repository and their bytes (sum of file
# sizes; for S3, the files under the bucket's directory in versitygw's posix
# store, without its .sgwtmp). The tools take turns for each target, so
# load from elsewhere on the machine hits both.
#
# Usage: bench/clouds.sh [options]
#
#   --targets LIST    comma-separated, from local,s3,s3-20ms (default all).
#                     s3-20ms means S3 behind the latency proxy with --rtt.
#   --datasets LIST   comma-separated, from small,media (default both)
#                       small   --count small files, --small-size in all
#                               (bench/gen -kind small, as bench/smallfiles.sh)
#                       media   --media-size of random "media" files, 2,000
#                               per GiB (bench/gen -kind media, as bench/run.sh)
#   --tools LIST      comma-separated, from coffer,restic (default both)
#   --count N         small files (default 100000)
#   --small-size SIZE their total size (default 25MB)
#   --media-size SIZE size of the media folder (default 1GiB)
#   --rtt DURATION    round trip added by the proxy (default 20ms; the target
#                     is still called s3-20ms)
#   --data DIR        where datasets, repositories and the S3 server's files
#                     go. Default: a new directory under /var/tmp, removed at
#                     the end. With --data, datasets are kept and reused
#                     (they are deterministic); everything else is removed.
#                     Restored trees are kept until the end of the run (see
#                     run()); the full run needs about 12 GiB free.
#   --out DIR         where clouds-<date>.md and .tsv go (default bench/out)
#   -h, --help        this text
#
# Examples:
#   bench/clouds.sh --count 2000 --media-size 64MiB      # smoke run, ~1 min
#   bench/clouds.sh --data /var/tmp/cc                   # full run
#   bench/clouds.sh --targets s3-20ms --datasets small --tools coffer
#
# Needs: go, restic, versitygw and curl in PATH (versitygw: go install
# github.com/versity/versitygw/cmd/versitygw@v1.8.0, or
# .ci/install-versitygw.sh), GNU time (/usr/bin/time), bc, diff.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGETS=local,s3,s3-20ms DATASETS=small,media TOOLS=coffer,restic
COUNT=100000 SMALLSIZE=25MB MEDIASIZE=1GiB RTT=20ms DATA="" OUTDIR="$ROOT/bench/out"
ARGS=("$@")

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "clouds.sh: $*" >&2; exit 1; }

while (($#)); do
	case $1 in
	--targets) TARGETS=${2:?}; shift 2 ;;
	--datasets) DATASETS=${2:?}; shift 2 ;;
	--tools) TOOLS=${2:?}; shift 2 ;;
	--count) COUNT=${2:?}; shift 2 ;;
	--small-size) SMALLSIZE=${2:?}; shift 2 ;;
	--media-size) MEDIASIZE=${2:?}; shift 2 ;;
	--rtt) RTT=${2:?}; shift 2 ;;
	--data) DATA=${2:?}; shift 2 ;;
	--out) OUTDIR=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
done
for x in ${TARGETS//,/ }; do [[ $x =~ ^(local|s3|s3-20ms)$ ]] || die "unknown target $x"; done
for x in ${DATASETS//,/ }; do [[ $x =~ ^(small|media)$ ]] || die "unknown dataset $x"; done
for x in ${TOOLS//,/ }; do [[ $x =~ ^(coffer|restic)$ ]] || die "unknown tool $x"; done
[[ $COUNT =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive number"
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MEDIAB=$(bytes "$MEDIASIZE")

for c in go /usr/bin/time bc diff curl; do command -v "$c" >/dev/null || die "$c is not installed"; done
has "$TOOLS" restic && { command -v restic >/dev/null || die "restic is not installed"; }
if [[ $TARGETS == *s3* ]]; then
	command -v versitygw >/dev/null || die "versitygw is not in PATH (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0; it lands in \$(go env GOPATH)/bin)"
fi

# ---- directories ----
TEMPDATA=0
if [[ -z $DATA ]]; then
	DATA=$(mktemp -d /var/tmp/coffer-clouds.XXXXXX)
	TEMPDATA=1
else
	mkdir -p "$DATA"
	DATA=$(cd "$DATA" && pwd)
fi
SRC=$DATA/src W=$DATA/work BIN=$DATA/bin
PIDS=()
cleanup() {
	local rc=$? p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if ((TEMPDATA)); then rm -rf "$DATA"; else rm -rf "$W"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$W"
mkdir -p "$SRC" "$W/tmp" "$W/restored" "$BIN" "$OUTDIR"
export TMPDIR=$W/tmp # Coffer's temporary manifests: on the same disk

echo "== building coffer, gen and latencyproxy (go build)"
(cd "$ROOT" && go build -o "$BIN/coffer" ./cmd/coffer && go build -o "$BIN/gen" ./bench/gen && go build -o "$BIN/latencyproxy" ./bench/latencyproxy)
COFFER=$BIN/coffer

# ---- datasets: $SRC/DS/DS, backed up from $SRC/DS as DS ----
gen_dataset() { # NAME STAMP CMD...
	local name=$1 stamp=$2
	shift 2
	if [[ -d $SRC/$name/$name && -f $SRC/$name.stamp && $(<"$SRC/$name.stamp") == "$stamp" ]]; then
		echo "== reusing $SRC/$name/$name"
		return
	fi
	echo "== generating $name ($stamp)"
	rm -rf "${SRC:?}/$name" "$SRC/$name.stamp"
	mkdir -p "$SRC/$name"
	"$@"
	echo "$stamp" >"$SRC/$name.stamp"
}
MEDIACOUNT=$(((2000 * MEDIAB + (1 << 29)) >> 30))
((MEDIACOUNT >= 10)) || MEDIACOUNT=10
declare -A INPUT FILES
for ds in ${DATASETS//,/ }; do
	case $ds in
	small) gen_dataset small "small seed=1 count=$COUNT size=$SMALLSIZE" "$BIN/gen" -kind small -seed 1 -count "$COUNT" -size "$SMALLSIZE" -out "$SRC/small/small" ;;
	media) gen_dataset media "media seed=1 size=$MEDIAB count=$MEDIACOUNT" "$BIN/gen" -kind media -seed 1 -count "$MEDIACOUNT" -size "$MEDIAB" -out "$SRC/media/media" ;;
	esac
	INPUT[$ds]=$(find "$SRC/$ds/$ds" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
	FILES[$ds]=$(find "$SRC/$ds/$ds" -type f | wc -l)
done
sync

# ---- S3: one versitygw for the run, and the latency proxy in front of it ----
AKEY=clouds-bench ASECRET=clouds-bench-secret
GWDIR=$W/gw GW="" PROXY=""
if [[ $TARGETS == *s3* ]]; then
	mkdir -p "$GWDIR"
	for try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 30000))
		HOME=$W versitygw --access "$AKEY" --secret "$ASECRET" --port "127.0.0.1:$port" --quiet posix "$GWDIR" >"$W/gw.log" 2>&1 &
		gwpid=$!
		ok=0
		for _ in $(seq 100); do
			kill -0 "$gwpid" 2>/dev/null || break
			if curl -s -o /dev/null "http://127.0.0.1:$port/"; then ok=1; break; fi
			sleep 0.1
		done
		if ((ok)); then PIDS+=("$gwpid"); GW=127.0.0.1:$port; break; fi
		kill "$gwpid" 2>/dev/null || true
		wait "$gwpid" 2>/dev/null || true
	done
	[[ -n $GW ]] || { cat "$W/gw.log" >&2; die "versitygw did not start"; }
	echo "== versitygw on $GW, posix directory $GWDIR"
	if has "$TARGETS" s3-20ms; then
		rm -f "$W/proxy.addr"
		"$BIN/latencyproxy" -upstream "$GW" -rtt "$RTT" -addr-file "$W/proxy.addr" >/dev/null 2>"$W/proxy.log" &
		PIDS+=("$!")
		for _ in $(seq 100); do [[ -s $W/proxy.addr ]] && break; sleep 0.05; done
		[[ -s $W/proxy.addr ]] || { cat "$W/proxy.log" >&2; die "latencyproxy did not start"; }
		PROXY=$(<"$W/proxy.addr")
		echo "== latency proxy on $PROXY, $RTT round trip added, to $GW"
	fi
fi
export AWS_ACCESS_KEY_ID=$AKEY AWS_SECRET_ACCESS_KEY=$ASECRET AWS_REGION=us-east-1
export AWS_SESSION_TOKEN="" AWS_PROFILE="" AWS_CONFIG_FILE=$W/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$W/no-aws-credentials AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
export RESTIC_PASSWORD=clouds-bench

# ---- machine ----
STAMP=$(date -u +%Y-%m-%d-%H%M)
MD=$OUTDIR/clouds-$STAMP.md TSV=$OUTDIR/clouds-$STAMP.tsv
{
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bench/clouds.sh${ARGS[*]:+ ${ARGS[*]}}\`"
	echo "- $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- $(go version | sed 's/^go version //'); coffer $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'); $(restic version 2>/dev/null | cut -d' ' -f1-2 || echo 'restic: none'); versitygw $(versitygw --version 2>/dev/null | tr -s ' \n' ' ' || echo '?')"
	echo "- data: $DATA on $(df -h --output=source,fstype "$DATA" | tail -1 | tr -s ' '); S3 RTT added for s3-20ms: $RTT"
	for ds in ${DATASETS//,/ }; do echo "- dataset $ds: ${FILES[$ds]} files, ${INPUT[$ds]} bytes"; done
} | tee "$W/machine.md"
printf '# dataset\ttarget\ttool\top\tseconds\tmaxrss_kib\tobjects\tbytes\tload1\tuser_s\tsys_s\n' >"$TSV"

# ---- timing ----
now() { date +%s.%N; }
warm() { find "$1" -type f -exec cat {} + >/dev/null; }
# stored DIR: "objects bytes" of the files under DIR (without versitygw's .sgwtmp).
stored() { find "$1" -name .sgwtmp -prune -o -type f -printf '%s\n' | awk '{n++; s+=$1} END {print n+0, s+0}'; }

# measure DS TARGET TOOL OP STOREDIR CMD...: time CMD + sync; STOREDIR "-" for none.
measure() {
	local ds=$1 target=$2 tool=$3 op=$4 dir=$5
	shift 5
	sync
	local t0 t1 rc=0 load
	load=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(now)
	/usr/bin/time -v -o "$W/time.txt" "$@" >"$W/cmd.log" 2>&1 || rc=$?
	sync
	t1=$(now)
	if ((rc != 0)); then
		echo "clouds.sh: FAILED ($ds $target $tool $op, exit $rc): $*" >&2
		tail -20 "$W/cmd.log" >&2
		exit 1
	fi
	local rss user sys objs=- b=- secs
	rss=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$W/time.txt")
	user=$(sed -n 's/^\tUser time (seconds): //p' "$W/time.txt")
	sys=$(sed -n 's/^\tSystem time (seconds): //p' "$W/time.txt")
	[[ $dir == - ]] || read -r objs b < <(stored "$dir")
	secs=$(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ds" "$target" "$tool" "$op" "$secs" "$rss" "$objs" "$b" "$load" "$user" "$sys" >>"$TSV"
	printf '   %-6s %-8s %-7s %-13s %8s s  RSS %4d MiB  objects %7s  bytes %11s  user %6s  sys %6s  load %s\n' \
		"$ds" "$target" "$tool" "$op" "$secs" $((rss / 1024)) "$objs" "$b" "$user" "$sys" "$load"
}

verify() { # DS RESTORED
	diff -r "$SRC/$1/$1" "$2" >"$W/diff.log" 2>&1 || { head -20 "$W/diff.log" >&2; die "RESTORE MISMATCH: $2 differs from $SRC/$1/$1"; }
}

# run DS TARGET TOOL: init (untimed), backup, [backup again], restore, verify.
run() {
	local ds=$1 target=$2 tool=$3 dir=$SRC/$1 out=$W/out repo store
	local bucket=${tool}-${ds}-${target}
	rm -rf "$W/$tool" "$out"
	mkdir -p "$W/$tool"
	case $target in
	local) repo=$W/$tool/repo store=$repo ;;
	s3 | s3-20ms)
		local ep=$GW
		[[ $target == s3 ]] || ep=$PROXY
		rm -rf "${GWDIR:?}/$bucket"
		mkdir "$GWDIR/$bucket" # a bucket of versitygw's posix store is a directory
		store=$GWDIR/$bucket
		if [[ $tool == coffer ]]; then repo="s3://$bucket/repo?endpoint=http://$ep&region=us-east-1"; else repo="s3:http://$ep/$bucket/repo"; fi
		;;
	esac
	if [[ $tool == coffer ]]; then
		"$COFFER" --state "$W/coffer/state" -q init --repo "$repo" --key-file "$W/coffer/key" >"$W/init.log" 2>&1 ||
			{ cat "$W/init.log" >&2; die "coffer init failed"; }
		local backup=(bash -c 'cd "$1" && exec "$2" --state "$3" -q backup "$4"' _ "$dir" "$COFFER" "$W/coffer/state" "$ds")
		local restore=("$COFFER" --state "$W/coffer/state" -q restore --to "$out")
	else
		export RESTIC_CACHE_DIR=$W/restic/cache
		restic -r "$repo" init -q >"$W/init.log" 2>&1 || { cat "$W/init.log" >&2; die "restic init failed"; }
		local backup=(bash -c 'cd "$1" && exec restic -r "$2" backup -q "$3"' _ "$dir" "$repo" "$ds")
		local restore=(restic -r "$repo" restore latest -q --target "$out")
	fi
	warm "$dir/$ds"
	measure "$ds" "$target" "$tool" backup "$store" "${backup[@]}"
	if [[ $ds == small ]]; then
		warm "$dir/$ds"
		measure "$ds" "$target" "$tool" backup-again "$store" "${backup[@]}"
	fi
	[[ $target == local ]] && warm "$store"
	measure "$ds" "$target" "$tool" restore - "${restore[@]}"
	verify "$ds" "$out/$ds"
	# Restored trees are kept until the end: ext4 allocates new inodes
	# slowly where many were deleted in the last minutes (recently_deleted
	# in __ext4_new_inode), which made a restore of 100,000 files right
	# after an rm -rf of the previous one 5-10x slower, all in the kernel.
	mv "$out" "$W/restored/$ds-$target-$tool"
	rm -rf "$W/$tool"
	[[ $target == local ]] || rm -rf "${GWDIR:?}/$bucket"
}

START=$(now)
for ds in ${DATASETS//,/ }; do
	echo "== $ds: ${FILES[$ds]} files, ${INPUT[$ds]} bytes"
	for target in ${TARGETS//,/ }; do
		for tool in ${TOOLS//,/ }; do run "$ds" "$target" "$tool"; done
	done
done
TOTAL=$(printf '%.0f' "$(echo "$(now) - $START" | bc -l)")
echo "== all restores verified; total $TOTAL s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report ----
report() {
	cat "$W/machine.md"
	echo "- total $TOTAL s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	for ds in ${DATASETS//,/ }; do
		local mib
		mib=$(echo "${INPUT[$ds]} / 1048576" | bc -l)
		echo
		printf '### %s: %s files, %s bytes (%.1f MiB)\n\n' "$ds" "${FILES[$ds]}" "${INPUT[$ds]}" "$mib"
		echo "| target | tool | operation | seconds | max RSS MiB | objects | bytes stored | user s | sys s | load |"
		echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' -v ds="$ds" '$1 == ds {
			b = $8; if (b != "-") { s = ""; while (length(b) > 3) { s = "," substr(b, length(b) - 2) s; b = substr(b, 1, length(b) - 3) }; b = b s }
			printf "| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6 / 1024, $7, b, $10, $11, $9 }' "$TSV"
		echo
		# verdicts, per target in the order of --targets
		awk -F'\t' -v ds="$ds" -v mib="$mib" -v targets="$TARGETS" '
			$1 == ds && $4 == "backup" { t[$2 "/" $3] = $5; o[$2 "/" $3] = $7 }
			END {
				n = split(targets, tg, ",")
				for (i = 1; i <= n; i++) {
					c = tg[i] "/coffer"; r = tg[i] "/restic"
					if (!(c in o)) continue
					line = sprintf("- %s: coffer wrote %d objects for %.1f MiB of data (%.3f per MiB)", tg[i], o[c], mib, o[c] / mib)
					if (r in t) line = line sprintf(", restic %d; backup %.2f s against restic'"'"'s %.2f s (%.2fx: coffer %s)", o[r], t[c], t[r], t[c] / t[r], t[c] <= t[r] ? "no slower" : "SLOWER")
					print line
				}
			}' "$TSV"
	done
}
report >"$MD"
echo
cat "$MD"
echo
echo "Results: $MD (raw: $TSV)"
