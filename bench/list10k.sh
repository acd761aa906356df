#!/bin/sh
# Listing a large cache as whole processes: `kcache list --json` of N kernels
# next to the same N kernels in ktstr's directory layout listed by a Go process
# (bench/legacycache list: internal/legacy.List reads, parses and stats every
# entry, then prints the same kind of JSON). Both are started cold (a new
# process per run; the page cache is warm, as on a machine that uses its
# cache). Needs hyperfine.
#
#   bench/list10k.sh [entries]        default 10000
#
# bench/listgen builds both caches from the same kernels: each entry has its
# own 4 KiB image and 16 KiB vmlinux; the ktstr side is written as ktstr
# writes it, the kcache side stored through the library's Store (N commits).
set -eu
n=${1:-10000}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kcache-list.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v hyperfine >/dev/null || { echo "hyperfine not found (apt-get install hyperfine)" >&2; exit 1; }

cd "$repo"
go build -o "$work/kcache" ./cmd/kcache
go build -o "$work/legacycache" ./bench/legacycache
go build -o "$work/listgen" ./bench/listgen
echo "building $n entries in each layout..." >&2
start=$(date +%s)
"$work/listgen" "$n" "$work/l" "$work/k"
echo "built in $(($(date +%s) - start)) s; index.db is $(du -h "$work/k/index.db" | cut -f1)" >&2

# Both must list all n entries, none corrupt.
got=$("$work/kcache" --root "$work/k" list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["entries"]) if isinstance(d,dict) else len(d))')
[ "$got" -eq "$n" ] || { echo "kcache lists $got entries, want $n" >&2; exit 1; }
got=$("$work/legacycache" list "$work/l" | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if not r.get("error")))')
[ "$got" -eq "$n" ] || { echo "legacy lists $got usable entries, want $n" >&2; exit 1; }

hyperfine -N --warmup 3 --runs "${RUNS:-20}" --export-json "$work/list.json" \
	-n "kcache list --json" "$work/kcache --root $work/k list --json" \
	-n "legacy list (Go process, ktstr layout)" "$work/legacycache list $work/l"
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
print("| command | median ms | min ms | mean ms | median / kcache |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print("| %s | %.1f | %.1f | %.1f | %.2f |" % (x["command"], x["median"] * 1e3, x["min"] * 1e3, x["mean"] * 1e3, x["median"] / base))
' "$work/list.json"
