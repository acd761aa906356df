#!/bin/sh
# Process-level lookup: what a harness pays for one `kcache lookup KEY` (process
# start, cobra, bbolt open, read, close) next to the same lookup in ktstr's
# directory layout done by a Go process (bench/legacycache) and by `cat
# metadata.json` (the floor: a tiny C process reading one file). `kcache version`
# separates the kcache binary's start-up from the lookup itself. Needs hyperfine.
#
#   bench/lookup.sh [entries]        default 1000
#
# Both caches get the same number of entries, each with its own 4 KiB image and
# 16 KiB vmlinux. The looked-up key was looked up once before timing, so
# kcache's lookups are read-only (last_used is rewritten at most once an hour).
set -eu
n=${1:-1000}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kcache-lookup.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v hyperfine >/dev/null || { echo "hyperfine not found (apt-get install hyperfine)" >&2; exit 1; }

cd "$repo"
go build -o "$work/kcache" ./cmd/kcache
go build -o "$work/legacycache" ./bench/legacycache
head -c 4096 /dev/urandom >"$work/bzImage"
head -c 16384 /dev/urandom >"$work/vmlinux"
echo "storing $n entries in each layout..." >&2
i=0
while [ "$i" -lt "$n" ]; do
	printf '%08d' "$i" | dd of="$work/bzImage" conv=notrunc status=none
	printf '%08d' "$i" | dd of="$work/vmlinux" conv=notrunc status=none
	key="6.14.$i-tarball-x86_64-kcc0bd848c"
	at=$(date -u -d "@$((1775000000 + i * 60))" +%Y-%m-%dT%H:%M:%SZ)
	"$work/kcache" --root "$work/k" store "$key" --image "$work/bzImage" --vmlinux "$work/vmlinux" \
		--version 6.14.2 --arch x86_64 --built-at "$at" >/dev/null 2>&1
	"$work/legacycache" store "$work/l" "$key" "$work/bzImage" "$work/vmlinux" "$at"
	i=$((i + 1))
done
key="6.14.$((n / 2))-tarball-x86_64-kcc0bd848c"
"$work/kcache" --root "$work/k" lookup "$key" >/dev/null 2>&1 # records last_used
"$work/legacycache" lookup "$work/l" "$key" >/dev/null

# kcache warns on stderr for every lookup of an unstripped vmlinux; hyperfine
# discards the output of all three commands alike.
hyperfine -N --warmup 50 --runs "${RUNS:-500}" --export-json "$work/lookup.json" \
	-n "kcache lookup" "$work/kcache --root $work/k lookup $key" \
	-n "kcache version (start-up, no lookup)" "$work/kcache version" \
	-n "legacy lookup (Go process)" "$work/legacycache lookup $work/l $key" \
	-n "cat metadata.json" "cat $work/l/$key/metadata.json"
# hyperfine's summary is of means; on a noisy machine medians say more.
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
print("| command | median ms | min ms | mean ms | median / kcache |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print("| %s | %.2f | %.2f | %.2f | %.2f |" % (x["command"], x["median"] * 1e3, x["min"] * 1e3, x["mean"] * 1e3, x["median"] / base))
' "$work/lookup.json"
