#!/usr/bin/env bash
# bench/run.sh: Coffer's benchmark suite. Times Coffer against the plain copy
# (cp -r + sync), restic and age on the same generated data, checks every
# restore byte for byte, and prints one table per dataset plus the targets of
# the performance issue (met / missed). See BENCHMARKS.md.
#
# Usage: bench/run.sh [options]
#
#   --data DIR        where datasets, repositories and outputs go (needs ~20 GiB
#                     for the default run). Default: a new directory under
#                     $TMPDIR, or /var/tmp if $TMPDIR is unset or on tmpfs; it
#                     is removed at the end unless --keep. With --data the
#                     generated datasets are kept and reused by later runs
#                     (they are deterministic); outputs are always removed.
#   --size SIZE       size of each dataset (default 1GiB; suffixes KiB MiB GiB,
#                     or MB GB for powers of 10)
#   --small           quick smoke run: --size 64MiB, --reps 1, no memory check
#   --datasets LIST   comma-separated, from random,chat,media,mem
#                     (default: all; without mem when --small)
#                       random  one file of incompressible bytes
#                       chat    one file of chat-like text (compresses ~3.2x)
#                       media   a nested folder of ~2,000 random "media" files
#                               per GiB (50 KiB - 2 MiB each)
#                       mem     Coffer alone backs up and restores one
#                               --mem-size file; the max RSS is the figure
#   --mem-size SIZE   size of the memory-check file (default 4GiB)
#   --tools LIST      comma-separated, from cp,coffer,restic,age (default all)
#   --reps N          timed runs of every operation; the median is reported
#                     (default 3; 1 with --small). The tools take turns within
#                     each round, so load from elsewhere hits them alike.
#   --out DIR         where results-<date>.md and .tsv go (default bench/out)
#   --keep            keep the data directory
#   -h, --help        this text
#
# Examples:
#   bench/run.sh --small                      # ~30 s
#   bench/run.sh                              # full run, 9-12 minutes on 2 cores
#   bench/run.sh --data /var/tmp/cb --datasets chat --tools coffer,restic
#
# Method: for each operation, outputs of the previous run are removed, then
# sync; the command runs under /usr/bin/time -v (max RSS, CPU time) and
# is followed by sync, and "seconds" is the tool's wall time plus that sync:
# every tool is timed until its output is on disk (Coffer syncs by itself,
# cp, age and restic do not). What the command reads (source, repository or
# .age file) is read just before each run, so every tool starts from the same
# warm page cache. Repositories are created untimed before each backup.
# Backups run from the source's parent directory with a relative name, so
# each restore yields TARGET/NAME, which is compared with cmp (files) or
# diff -r (folders): a wrong restore stops the run with exit 1.
# 1 MB = 10^6 bytes; MB/s is of the input (uncompressed) size.
#
# Needs: go, restic, age, age-keygen, GNU time (/usr/bin/time), tar, cmp, diff.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA="" SIZE=1GiB SMALL=0 DATASETS="" MEMSIZE=4GiB TOOLS=cp,coffer,restic,age REPS="" OUTDIR="$ROOT/bench/out" KEEP=0
ARGS=("$@")

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 1; }

while (($#)); do
	case $1 in
	--data) DATA=${2:?}; shift 2 ;;
	--size) SIZE=${2:?}; shift 2 ;;
	--small) SMALL=1; shift ;;
	--datasets) DATASETS=${2:?}; shift 2 ;;
	--mem-size) MEMSIZE=${2:?}; shift 2 ;;
	--tools) TOOLS=${2:?}; shift 2 ;;
	--reps) REPS=${2:?}; shift 2 ;;
	--out) OUTDIR=${2:?}; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
done
if ((SMALL)); then
	SIZE=64MiB
	: "${REPS:=1}"
	: "${DATASETS:=random,chat,media}"
fi
: "${REPS:=3}" "${DATASETS:=random,chat,media,mem}"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive number"
for d in ${DATASETS//,/ }; do [[ $d =~ ^(random|chat|media|mem)$ ]] || die "unknown dataset $d"; done
for t in ${TOOLS//,/ }; do [[ $t =~ ^(cp|coffer|restic|age)$ ]] || die "unknown tool $t"; done
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SIZEB=$(bytes "$SIZE")
MEMB=$(bytes "$MEMSIZE")
((SIZEB >= 1 << 20)) || die "--size must be at least 1MiB"

for c in go restic age age-keygen /usr/bin/time tar cmp diff; do
	command -v "$c" >/dev/null || die "$c is not installed"
done

# ---- the data directory ----
is_tmpfs() { [[ $(stat -f -c %T "$1" 2>/dev/null) =~ ^(tmpfs|ramfs)$ ]]; }
TEMPDATA=0
if [[ -z $DATA ]]; then
	base=${TMPDIR:-/var/tmp}
	if is_tmpfs "$base"; then base=/var/tmp; fi
	is_tmpfs "$base" && echo "run.sh: warning: $base is in memory (tmpfs): the disk is not measured" >&2
	DATA=$(mktemp -d "$base/coffer-bench.XXXXXX")
	TEMPDATA=1
else
	mkdir -p "$DATA"
	DATA=$(cd "$DATA" && pwd)
	is_tmpfs "$DATA" && echo "run.sh: warning: $DATA is in memory (tmpfs): the disk is not measured" >&2
fi
SRC=$DATA/src W=$DATA/work BIN=$DATA/bin
cleanup() {
	local rc=$?
	if ((TEMPDATA && !KEEP)); then rm -rf "$DATA"; else rm -rf "$W"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$W"
mkdir -p "$SRC" "$W" "$BIN" "$OUTDIR"

need=$((5 * SIZEB))
has "$DATASETS" mem && need=$((need + 3 * MEMB))
avail=$(($(df --output=avail -k "$DATA" | tail -1) * 1024))
((avail > need)) || die "$DATA has $((avail >> 30)) GiB free; this run needs about $((need >> 30)) GiB"

# Coffer writes its temporary manifests to $TMPDIR: keep them on the same disk.
export TMPDIR=$W/tmp
mkdir -p "$TMPDIR"

# ---- build ----
echo "== building coffer, gen and report (go build)"
(cd "$ROOT" && go build -o "$BIN/coffer" ./cmd/coffer && go build -o "$BIN/gen" ./bench/gen && go build -o "$BIN/report" ./bench/report)
COFFER=$BIN/coffer

# ---- machine and versions ----
STAMP=$(date -u +%Y-%m-%d-%H%M)
MD=$OUTDIR/results-$STAMP.md TSV=$OUTDIR/results-$STAMP.tsv
machine() {
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bench/run.sh${ARGS[*]:+ ${ARGS[*]}}\`"
	echo "- CPU: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p' | head -1); memory: $(free -g | awk '/^Mem:/{print $2}') GiB; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- data dir: $DATA on $(df -h --output=source,fstype,size,avail "$DATA" | tail -1 | tr -s ' ') (device, fs, size, free)"
	echo "- $(go version | sed 's/^go version //'); coffer $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'); $(restic version | cut -d' ' -f1-2); age $(age --version)"
	echo "- dataset size $SIZE; reps $REPS; datasets $DATASETS; tools $TOOLS"
}
machine | tee "$W/machine.md"
printf '# dataset\ttool\top\trep\twall_s\tsync_s\tuser_s\tsys_s\tmaxrss_kib\tinput_bytes\tstored_bytes\tload1\tminor_faults\n' >"$TSV"

# ---- datasets (deterministic; reused when --data is given) ----
# gen_dataset NAME STAMP CMD...: make $SRC/NAME unless its stamp matches.
gen_dataset() {
	local name=$1 stamp=$2
	shift 2
	if [[ -e $SRC/$name && -f $SRC/$name.stamp && $(<"$SRC/$name.stamp") == "$stamp" ]]; then
		echo "== reusing $SRC/$name"
		return
	fi
	echo "== generating $name ($stamp)"
	rm -rf "${SRC:?}/$name" "$SRC/$name.stamp"
	mkdir -p "$SRC/$name"
	"$@"
	echo "$stamp" >"$SRC/$name.stamp"
}
MEDIA_COUNT=$(((2000 * SIZEB + (1 << 29)) >> 30))
((MEDIA_COUNT >= 10)) || MEDIA_COUNT=10
# dataset layout: $SRC/DS/NAME, backed up from $SRC/DS as NAME
declare -A NAME=([random]=random.bin [chat]=chat.txt [media]=media [mem]=random-mem.bin)
declare -A INPUT
for ds in ${DATASETS//,/ }; do
	case $ds in
	random) gen_dataset random "random seed=1 size=$SIZEB" "$BIN/gen" -kind random -seed 1 -size "$SIZEB" -out "$SRC/random/random.bin" ;;
	chat) gen_dataset chat "chat seed=1 size=$SIZEB" "$BIN/gen" -kind chat -seed 1 -size "$SIZEB" -out "$SRC/chat/chat.txt" ;;
	media) gen_dataset media "media seed=1 size=$SIZEB count=$MEDIA_COUNT" "$BIN/gen" -kind media -seed 1 -count "$MEDIA_COUNT" -size "$SIZEB" -out "$SRC/media/media" ;;
	mem) gen_dataset mem "random seed=2 size=$MEMB" "$BIN/gen" -kind random -seed 2 -size "$MEMB" -out "$SRC/mem/random-mem.bin" ;;
	esac
	INPUT[$ds]=$(du -sb --apparent-size "$SRC/$ds/${NAME[$ds]}" | cut -f1)
done
sync # write back what was generated before anything is timed

# ---- timing ----
now() { date +%s.%N; }
# warm PATH: read every file under PATH, so that it is in the page cache.
# (Needed before every run, not just once: this VM runs a DAMON "pageout"
# scheme that evicts memory, page cache included, not touched for ~60 s.)
warm() { find "$1" -type f -exec cat {} + >/dev/null; }

# measure DS TOOL OP INPUT STORED CMD...: time CMD (+ sync), append to $TSV.
# INPUT (what CMD reads) is read into the page cache first. STORED ("-" for
# none) is measured with du after the run.
measure() {
	local ds=$1 tool=$2 op=$3 input=$4 stored_path=$5
	shift 5
	warm "$input"
	sync
	local t0 t1 t2 rc=0 load
	load=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(now)
	/usr/bin/time -v -o "$W/time.txt" "$@" >"$W/cmd.log" 2>&1 || rc=$?
	t1=$(now)
	if ((rc != 0)); then
		echo "run.sh: FAILED ($ds $tool $op, exit $rc): $*" >&2
		tail -20 "$W/cmd.log" >&2
		exit 1
	fi
	sync
	t2=$(now)
	local rss user sys faults stored=0
	rss=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$W/time.txt")
	user=$(sed -n 's/^\tUser time (seconds): //p' "$W/time.txt")
	sys=$(sed -n 's/^\tSystem time (seconds): //p' "$W/time.txt")
	faults=$(sed -n 's/^\tMinor (reclaiming a frame) page faults: //p' "$W/time.txt")
	[[ $stored_path == - ]] || stored=$(du -sb --apparent-size "$stored_path" | cut -f1)
	local wall sy
	wall=$(echo "$t1 - $t0" | bc -l)
	sy=$(echo "$t2 - $t1" | bc -l)
	printf '%s\t%s\t%s\t%s\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ds" "$tool" "$op" "$REP" "$wall" "$sy" "$user" "$sys" "$rss" "${INPUT[$ds]}" "$stored" "$load" "$faults" >>"$TSV"
	printf '   %-7s %-7s %-7s %7.2f s (+ sync %.2f s) %6.0f MB/s  user %5.2f s  sys %5.2f s  max RSS %4d MiB  load %s\n' "$tool" "$op" "$ds" "$wall" "$sy" \
		"$(echo "${INPUT[$ds]} / 1000000 / ($wall + $sy)" | bc -l)" "$user" "$sys" $((rss / 1024)) "$load"
}

# verify DS RESTORED: the restored copy must equal the source.
verify() {
	local ds=$1 got=$2 want=$SRC/$1/${NAME[$1]}
	if [[ -d $want ]]; then
		diff -r "$want" "$got" >"$W/diff.log" 2>&1 || { head -20 "$W/diff.log" >&2; die "RESTORE MISMATCH: $got differs from $want"; }
	else
		cmp "$want" "$got" || die "RESTORE MISMATCH: $got differs from $want"
	fi
}

export RESTIC_PASSWORD=coffer-bench
age-keygen -o "$W/age-key.txt" 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y "$W/age-key.txt")

# One round: every tool's operations on dataset ds.
round() {
	local ds=$1 name=${NAME[$1]} dir=$SRC/$1 out=$W/out
	local src=$dir/$name
	if has "$TOOLS" cp; then
		rm -rf "$W/cp" && mkdir "$W/cp"
		measure "$ds" cp copy "$src" "$W/cp" cp -r "$src" "$W/cp/"
		rm -rf "$W/cp"
	fi
	if has "$TOOLS" coffer; then
		rm -rf "$W/coffer" "$out"
		mkdir "$W/coffer"
		"$COFFER" --state "$W/coffer/state" -q init --repo "$W/coffer/repo" --key-file "$W/coffer/key" >"$W/init.log" 2>&1 ||
			{ cat "$W/init.log" >&2; die "coffer init failed"; }
		measure "$ds" coffer backup "$src" "$W/coffer/repo" bash -c 'cd "$1" && exec "$2" --state "$3" -q backup "$4"' _ "$dir" "$COFFER" "$W/coffer/state" "$name"
		measure "$ds" coffer restore "$W/coffer/repo" - "$COFFER" --state "$W/coffer/state" -q restore --to "$out"
		verify "$ds" "$out/$name"
		rm -rf "$W/coffer" "$out"
	fi
	if has "$TOOLS" restic && [[ $ds != mem ]]; then
		rm -rf "$W/restic" "$out"
		export RESTIC_CACHE_DIR=$W/restic/cache
		restic -r "$W/restic/repo" init -q >"$W/init.log" 2>&1 || { cat "$W/init.log" >&2; die "restic init failed"; }
		measure "$ds" restic backup "$src" "$W/restic/repo" bash -c 'cd "$1" && exec restic -r "$2" backup -q "$3"' _ "$dir" "$W/restic/repo" "$name"
		measure "$ds" restic restore "$W/restic/repo" - restic -r "$W/restic/repo" restore latest -q --target "$out"
		verify "$ds" "$out/$name"
		rm -rf "$W/restic" "$out"
	fi
	if has "$TOOLS" age && [[ $ds != mem ]]; then
		rm -rf "$W/age" "$out"
		mkdir "$W/age" "$out"
		if [[ -d $src ]]; then
			measure "$ds" age encrypt "$src" "$W/age/out.age" bash -c 'set -o pipefail; tar -C "$1" -cf - "$2" | age -r "$3" -o "$4"' _ "$dir" "$name" "$AGE_RECIPIENT" "$W/age/out.age"
			measure "$ds" age decrypt "$W/age/out.age" - bash -c 'set -o pipefail; age -d -i "$1" "$2" | tar -C "$3" -xf -' _ "$W/age-key.txt" "$W/age/out.age" "$out"
		else
			measure "$ds" age encrypt "$src" "$W/age/out.age" age -r "$AGE_RECIPIENT" -o "$W/age/out.age" "$src"
			measure "$ds" age decrypt "$W/age/out.age" - age -d -i "$W/age-key.txt" -o "$out/$name" "$W/age/out.age"
		fi
		verify "$ds" "$out/$name"
		rm -rf "$W/age" "$out"
	fi
}

START=$(now)
for ds in ${DATASETS//,/ }; do
	reps=$REPS
	if [[ $ds == mem ]]; then reps=1; fi # the max RSS hardly varies
	echo "== $ds: ${INPUT[$ds]} bytes, $reps round(s)"
	for ((REP = 1; REP <= reps; REP++)); do
		echo "-- round $REP"
		round "$ds"
	done
done
echo "== all restores verified; total $(printf '%.0f' "$(echo "$(now) - $START" | bc -l)") s"
echo

small=()
((SMALL)) && small=(-small)
"$BIN/report" -in "$TSV" -format text "${small[@]}"
{
	echo "# Coffer benchmark results, $STAMP"
	echo
	cat "$W/machine.md"
	echo
	echo "\"seconds\" = median of $REPS run(s) of the tool's wall time plus a \`sync\` right after it; max RSS = largest of the runs;"
	echo "\"vs cp\" = seconds / seconds of \`cp -r\` + sync; stored = size of the repository or .age file. 1 MB = 10^6 bytes."
	echo
	"$BIN/report" -in "$TSV" -format md "${small[@]}"
} >"$MD"
echo "Results: $MD (raw runs: $TSV)"
