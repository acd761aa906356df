#!/bin/sh
# Process-level lookup: what a harness pays for one `kcache lookup KEY` (process
# start, cobra, bbolt open, read, close) next to the floor every Go CLI pays (a
# Go hello-world binary, built by this script from a main.go it writes into the
# temp dir), the same lookup in ktstr's directory layout done by a Go process
# (bench/legacycache) and `cat metadata.json` (a tiny C process reading one
# file). `kcache version` separates the kcache binary's start-up from the
# lookup itself. All commands run in one hyperfine run. Needs hyperfine, python3.
#
#   bench/lookup.sh [entries]        default 1000
#
# Environment: RUNS (default 500) timed runs per command, after 50 warm-ups;
# KCACHE_BEFORE=/path/to/kcache adds `BEFORE --root R lookup KEY` (an older
# build, e.g. `git stash; go build -o /tmp/kcache.before ./cmd/kcache`) to the
# same run, for before/after numbers on the same machine state.
#
# Both caches get the same number of entries, each with its own 4 KiB image and
# 16 KiB vmlinux. The looked-up key was looked up once before timing, so
# kcache's lookups are read-only (last_used is rewritten at most once an hour).
#
# kcache is built with CGO_ENABLED=0 (see below).
#
# Target (issue 7): median(kcache lookup) - median(hello world) <= 3 ms. The
# script prints PASS or FAIL and exits 1 on FAIL.
set -eu
n=${1:-1000}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kcache-lookup.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v hyperfine >/dev/null || { echo "hyperfine not found (apt-get install hyperfine)" >&2; exit 1; }

cd "$repo"
# CGO_ENABLED=0: spf13/pflag imports net, which with cgo makes the binary
# dynamically linked against libc; the dynamic loader costs ~1.2 ms per
# process here. The default (cgo) build is timed too, as its own row.
CGO_ENABLED=0 go build -o "$work/kcache" ./cmd/kcache
CGO_ENABLED=1 go build -o "$work/kcache-cgo" ./cmd/kcache
go build -o "$work/legacycache" ./bench/legacycache
mkdir "$work/hello"
cat >"$work/hello/main.go" <<'GO'
package main

import "os"

func main() { os.Stdout.WriteString("hello, world\n") }
GO
(cd "$work/hello" && GO111MODULE=off GOFLAGS= go build -o "$work/hello-go" main.go)

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

set -- -n "kcache lookup" "$work/kcache --root $work/k lookup $key" \
	-n "Go hello world" "$work/hello-go" \
	-n "kcache version (start-up, no lookup)" "$work/kcache version" \
	-n "legacy lookup (Go process)" "$work/legacycache lookup $work/l $key" \
	-n "cat metadata.json" "cat $work/l/$key/metadata.json" \
	-n "kcache lookup (default go build: cgo, dynamically linked)" "$work/kcache-cgo --root $work/k lookup $key"
if [ -n "${KCACHE_BEFORE:-}" ]; then
	set -- "$@" -n "kcache lookup (KCACHE_BEFORE build)" "$KCACHE_BEFORE --root $work/k lookup $key"
fi
# kcache warns on stderr for every lookup of an unstripped vmlinux; hyperfine
# discards the output of all commands alike.
hyperfine -N --warmup 50 --runs "${RUNS:-500}" --export-json "$work/lookup.json" "$@"
# hyperfine's summary is of means; on a noisy machine medians say more.
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base, hello, legacy = r[0]["median"], r[1]["median"], r[3]["median"]
print("| command | median ms | min ms | mean ms | median / kcache lookup |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print("| %s | %.2f | %.2f | %.2f | %.2f |" % (x["command"], x["median"] * 1e3, x["min"] * 1e3, x["mean"] * 1e3, x["median"] / base))
d = (base - hello) * 1e3
print()
print("kcache lookup - Go hello world (medians): %.2f ms" % d)
print("kcache lookup - legacy lookup (medians): %.2f ms; kcache / legacy = %.2f" % ((base - legacy) * 1e3, base / legacy))
print("cgo build - Go hello world (medians): %.2f ms" % ((r[5]["median"] - hello) * 1e3))
if len(r) > 6:
    print("KCACHE_BEFORE build - Go hello world (medians): %.2f ms" % ((r[6]["median"] - hello) * 1e3))
ok = d <= 3.0
print("%s  kcache lookup <= 3 ms above a Go hello world (%.2f ms)" % ("PASS" if ok else "FAIL", d))
sys.exit(0 if ok else 1)
' "$work/lookup.json"
