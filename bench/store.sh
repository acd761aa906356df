#!/usr/bin/env bash
# Store throughput (issue 7):
#  1. small entries: N stores (default 300) of a 4 KiB image + 16 KiB vmlinux,
#     each pair distinct, into a fresh cache root, fsyncs on as always, through
#     N `kcache store` processes (a shell loop), through one `kcache store
#     --batch` process reading the N lines from a file, and through the library
#     in one process (bench/storebench); entries/s = N / wall time of the N
#     stores.
#  2. the real Debian kernel from bench/fetch-kernel.sh (bzImage + 560 MiB
#     debug vmlinux, strip included) into a fresh root, against the work a
#     user's script does today: `objcopy --strip-debug VMLINUX OUT && cp
#     BZIMAGE OUT2`.
#
#   bench/store.sh [rounds]          default 5 (or $ROUNDS); N=$N (300)
#
# Every round runs each command once (order alternates by round); medians over
# rounds. Before every timed run, untimed: the previous output is removed and
# `sync` flushes dirty pages. kcache is built with CGO_ENABLED=0 (see
# bench/lookup.sh); SKIP_KERNEL=1 skips part 2. Exit 1 if a target is missed:
# small-entry stores >= 200 entries/s (CLI processes, batch CLI and library),
# real-kernel store
# faster than objcopy+cp.
set -euo pipefail
export LC_ALL=C
rounds=${1:-${ROUNDS:-5}}
n=${N:-300}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kcache-store.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log() { echo "store.sh: $*" >&2; }

CGO_ENABLED=${CGO_ENABLED:-0} go build -o "$tmp/kcache" ./cmd/kcache
go build -o "$tmp/storebench" ./bench/storebench
K=$tmp/kcache
mkdir "$tmp/in"
"$tmp/storebench" gen "$tmp/in" "$n" 4096 16384
now() { echo "${EPOCHREALTIME/./}"; }
: >"$tmp/samples"

cli_round() {
	rm -rf "$tmp/root"; sync
	local t0 t1 i
	t0=$(now)
	for ((i = 0; i < n; i++)); do
		"$K" --root "$tmp/root" store "bench-$i" --image "$tmp/in/image.$i" --vmlinux "$tmp/in/vmlinux.$i" \
			--image-name bzImage >/dev/null 2>&1
	done
	t1=$(now)
	echo "cli $((t1 - t0))" >>"$tmp/samples"
}
batch_round() {
	rm -rf "$tmp/root"; sync
	local t0 t1
	t0=$(now)
	"$K" --root "$tmp/root" store --batch --image-name bzImage <"$tmp/batch.in" >/dev/null 2>&1
	t1=$(now)
	echo "batch $((t1 - t0))" >>"$tmp/samples"
}
for ((i = 0; i < n; i++)); do
	echo "bench-$i $tmp/in/image.$i $tmp/in/vmlinux.$i"
done >"$tmp/batch.in"
lib_round() {
	rm -rf "$tmp/root"; sync
	local s
	s=$("$tmp/storebench" lib "$tmp/root" "$tmp/in" "$n")
	echo "lib $(awk -v s="$s" 'BEGIN { printf "%d", s * 1e6 }')" >>"$tmp/samples"
}
log "small entries: $rounds rounds of $n stores (CLI processes, CLI --batch, library)"
lib_round; batch_round; cli_round # warm-up, untimed
: >"$tmp/samples"
for ((r = 0; r < rounds; r++)); do
	if ((r % 2)); then lib_round; batch_round; cli_round; else cli_round; batch_round; lib_round; fi
done

if [ "${SKIP_KERNEL:-0}" != 1 ]; then
	{ read -r V && read -r Z; } < <(bench/fetch-kernel.sh) || true
	[ -s "$V" ] && [ -s "$Z" ] || { log "fetch-kernel.sh gave no files"; exit 2; }
	cat "$V" "$Z" >/dev/null
	kernel_store() {
		rm -rf "$tmp/kroot"; sync
		local t0 t1
		t0=$(now)
		"$K" --root "$tmp/kroot" store kernel --image "$Z" --vmlinux "$V" --image-name bzImage >/dev/null 2>&1
		t1=$(now)
		echo "kstore $((t1 - t0))" >>"$tmp/samples"
	}
	objcopy_cp() {
		rm -f "$tmp/out.vmlinux" "$tmp/out.bzImage"; sync
		local t0 t1
		t0=$(now)
		objcopy --strip-debug "$V" "$tmp/out.vmlinux" && cp "$Z" "$tmp/out.bzImage"
		t1=$(now)
		echo "objcopy $((t1 - t0))" >>"$tmp/samples"
	}
	log "real kernel: $rounds rounds of kcache store vs objcopy --strip-debug + cp"
	kernel_store; objcopy_cp # warm-up
	sed -i '/^kstore /d; /^objcopy /d' "$tmp/samples"
	for ((r = 0; r < rounds; r++)); do
		if ((r % 2)); then objcopy_cp; kernel_store; else kernel_store; objcopy_cp; fi
	done
fi

med() { awk -v t="$1" '$1 == t { print $2 }' "$tmp/samples" | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rng() { awk -v t="$1" '$1 == t { print $2 }' "$tmp/samples" | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f–%.1f", v[1] / 1000, v[NR] / 1000 }'; }
echo
echo "$(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds; medians"
echo
echo "| small-entry store ($n × 4 KiB image + 16 KiB vmlinux, fsync on) | median wall ms for $n | min–max ms | entries/s | ms/store |"
echo "|---|---:|---:|---:|---:|"
fails=0
for t in cli batch lib; do
	m=$(med $t)
	case $t in
	cli) name='`kcache store` processes (shell loop)' ;;
	batch) name='`kcache store --batch`, one process' ;;
	lib) name='library, one process (`Cache.Store`)' ;;
	esac
	awk -v m="$m" -v n="$n" -v name="$name" -v r="$(rng $t)" 'BEGIN { printf "| %s | %.1f | %s | %.0f | %.2f |\n", name, m / 1000, r, n / (m / 1e6), m / 1000 / n }'
	ok=$(awk -v m="$m" -v n="$n" 'BEGIN { print (n / (m / 1e6) >= 200) ? 1 : 0 }')
	eval "ok_$t=$ok"
done
if [ "${SKIP_KERNEL:-0}" != 1 ]; then
	ks=$(med kstore) oc=$(med objcopy)
	echo
	echo "| real kernel ($(basename "$V"), $(stat -c %s "$V") B + bzImage $(stat -c %s "$Z") B) | median wall ms | min–max ms |"
	echo "|---|---:|---:|"
	echo "| \`kcache store KEY --image BZIMAGE --vmlinux VMLINUX\` (fresh root, strip + fsyncs) | $(awk -v m="$ks" 'BEGIN { printf "%.1f", m / 1000 }') | $(rng kstore) |"
	echo "| \`objcopy --strip-debug VMLINUX OUT && cp BZIMAGE OUT2\` (no fsync) | $(awk -v m="$oc" 'BEGIN { printf "%.1f", m / 1000 }') | $(rng objcopy) |"
	awk -v a="$ks" -v b="$oc" 'BEGIN { printf "\nkcache store / (objcopy + cp) = %.3f\n", a / b }'
fi
echo
check() { if [ "$2" = 1 ]; then echo "PASS  $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }
check "kcache store processes >= 200 entries/s" "$ok_cli"
check "kcache store --batch >= 200 entries/s" "$ok_batch"
check "library Store >= 200 entries/s" "$ok_lib"
[ "${SKIP_KERNEL:-0}" != 1 ] && check "real-kernel kcache store faster than objcopy --strip-debug + cp" "$((ks < oc))"
[ "$fails" = 0 ]
