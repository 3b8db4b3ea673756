# bench/lib.sh: shell helpers the bench scripts source (they define die).

# has LIST ITEM: ITEM is in the comma-separated LIST.
has() { [[ ,$1, == *,$2,* ]]; }

# bytes SIZE: SIZE (1024, 64KiB, 1MiB, 1GiB, 25MB, …) in bytes.
bytes() {
	local s=${1^^} n mult=1
	n=${s%%[!0-9]*}
	[[ -n $n ]] || die "bad size $1"
	case ${s#"$n"} in
	"" | B) ;;
	K | KIB) mult=1024 ;;
	M | MIB) mult=$((1 << 20)) ;;
	G | GIB) mult=$((1 << 30)) ;;
	KB) mult=1000 ;;
	MB) mult=1000000 ;;
	GB) mult=1000000000 ;;
	*) die "bad size $1" ;;
	esac
	echo $((n * mult))
}
