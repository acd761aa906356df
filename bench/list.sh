#!/bin/sh
# Listing large caches as whole processes, N = 100 ... 100,000: `kcache list
# --json` of N kernels next to the same N kernels in ktstr's directory layout
# listed by a Go process (bench/legacycache list: internal/legacy.List reads,
# parses and stats every entry, then prints the same kind of JSON). Both are
# started cold (a new process per run; the page cache is warm, as on a machine
# that uses its cache). Needs hyperfine and GNU time (/usr/bin/time).
#
#   bench/list.sh [N ...]            default 100 1000 10000 100000
#   RUNS=10 bench/list.sh 10000      hyperfine runs per command (default 10)
#   KCACHE=path bench/list.sh        time another kcache binary
#
# bench/listgen -direct builds both caches (see bench/listgen/direct.go):
# realistic metadata, each entry's own 256-byte image, one shared 16 KiB
# vmlinux; the kcache index is written with package index in a few big
# transactions (100,000 entries build in well under 3 minutes).
#
# Prints one table: median wall time (hyperfine -N) and median peak RSS
# (/usr/bin/time -f %M over 5 runs) of each side, and kcache / legacy.
set -eu
[ $# -gt 0 ] || set -- 100 1000 10000 100000
runs=${RUNS:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kcache-list.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v hyperfine >/dev/null || { echo "hyperfine not found (apt-get install hyperfine)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found (apt-get install time)" >&2; exit 1; }

cd "$repo"
if [ -n "${KCACHE:-}" ]; then cp "$KCACHE" "$work/kcache"; else go build -o "$work/kcache" ./cmd/kcache; fi
go build -o "$work/legacycache" ./bench/legacycache
go build -o "$work/listgen" ./bench/listgen

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# peak RSS in KiB, median of 5 runs
rss() { for _ in 1 2 3 4 5; do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n1; done | median; }

rows=""
for n in "$@"; do
	l="$work/l$n" k="$work/k$n"
	echo "building $n entries in each layout..." >&2
	start=$(date +%s)
	"$work/listgen" -direct "$n" "$l" "$k" 2>"$work/listgen.err" || { cat "$work/listgen.err" >&2; exit 1; }
	echo "built in $(($(date +%s) - start)) s; index.db is $(du -h "$k/index.db" | cut -f1)" >&2

	# Both must list all n entries, none corrupt.
	got=$("$work/kcache" --root "$k" list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for e in d["entries"] if "error" not in e))')
	[ "$got" -eq "$n" ] || { echo "kcache lists $got usable entries, want $n" >&2; exit 1; }
	got=$("$work/legacycache" list "$l" | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if not r.get("error")))')
	[ "$got" -eq "$n" ] || { echo "legacy lists $got usable entries, want $n" >&2; exit 1; }

	hyperfine -N --style none --warmup 2 --runs "$runs" --export-json "$work/h$n.json" \
		"$work/kcache --root $k list --json" "$work/legacycache list $l" >/dev/null
	krss=$(rss "$work/kcache" --root "$k" list --json)
	lrss=$(rss "$work/legacycache" list "$l")
	rows="$rows$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
k, l = r[0]["median"] * 1e3, r[1]["median"] * 1e3
kr, lr = float(sys.argv[3]) / 1024, float(sys.argv[4]) / 1024
print("| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |" % (format(int(sys.argv[2]), ","), k, l, k / l, kr, lr, kr / lr))
' "$work/h$n.json" "$n" "$krss" "$lrss")
"
	rm -rf "$l" "$k"
done
echo "| N | kcache ms | legacy ms | kcache / legacy | kcache RSS MiB | legacy RSS MiB | RSS kcache / legacy |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
printf %s "$rows"
