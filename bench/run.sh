#!/bin/sh
# Runs the Store/Lookup/List benchmarks of bench_test.go (impl=kcache vs
# impl=legacy, ktstr's directory layout) and summarises them with benchstat.
#
#   bench/run.sh [rounds] [count] [benchtime]     defaults: 2 5 1s
#
# The test binary is built once and run `rounds` times with -count=`count`, so
# each implementation gets rounds*count samples and the samples of the two are
# interleaved at round granularity (the machine this was written on is shared
# and its disk latency drifts). Each round rebuilds the 1000-entry fixtures
# (about 35 s). Environment: BENCH (regexp, default "."), OUT (directory for the
# raw output, default a new temp dir), TMPDIR (where the caches are built).
# benchstat runs with `go run golang.org/x/perf/cmd/benchstat@$BENCHSTAT`
# (default latest) and is never added to go.mod.
set -eu
rounds=${1:-2} count=${2:-5} benchtime=${3:-1s}
bench=${BENCH:-.}
benchstat_version=${BENCHSTAT:-latest}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/kcache-bench.XXXXXX")}
mkdir -p "$out"

cd "$repo"
go test -c -o "$out/kcache.test" .
{
	echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) rounds=$rounds count=$count benchtime=$benchtime"
	echo "# $(go version); nproc=$(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
	echo "# TMPDIR filesystem: $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2, $1}')"
	echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo "${COMMIT:-unknown}")"
} >"$out/raw.txt"
i=1
while [ "$i" -le "$rounds" ]; do
	echo "round $i/$rounds" >&2
	# Run from $out so nothing lands in the repository.
	(cd "$out" && ./kcache.test -test.run '^$' -test.bench "$bench" -test.benchmem \
		-test.count "$count" -test.benchtime "$benchtime") | tee -a "$out/raw.txt" | grep '^Benchmark' >&2
	i=$((i + 1))
done

# benchstat runs outside the module so that go.mod is never touched.
benchstat() { (cd "$out" && go run "golang.org/x/perf/cmd/benchstat@$benchstat_version" "$@"); }
benchstat -col /impl raw.txt | tee "$out/benchstat.txt"
echo
echo "median sec/op and the ratio legacy/kcache (> 1: kcache is faster)"
benchstat -col /impl -format csv raw.txt 2>/dev/null | awk -F, '
	$2 == "sec/op" { insec = 1; next }
	/^$/ || $1 == "" { insec = 0 }
	insec && $1 != "geomean" {
		printf "%-22s kcache %10.1f µs   legacy %10.1f µs   legacy/kcache %5.2f\n", $1, $2 * 1e6, $4 * 1e6, $4 / $2
	}' | tee "$out/ratios.txt"
echo "raw output in $out" >&2
