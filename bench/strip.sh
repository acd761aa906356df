#!/usr/bin/env bash
# Strip benchmark on a real distro kernel: `kcache strip` against
# `objcopy --strip-debug` and `eu-strip -g`, plus a whole `kcache store`
# (bzImage + vmlinux, stripped into a fresh cache), on Debian's
# linux-image-6.1.0-50-cloud-amd64 debug vmlinux (560 MiB). Then checks the
# issue's targets and runs the client tools (readelf, nm, bpftool, pahole,
# addr2line) on kcache's output.
#
#   bench/strip.sh [runs]            default 7 (or $RUNS)
#
# The kernel comes from bench/fetch-kernel.sh (KCACHE_BENCH_CACHE,
# KCACHE_BENCH_KERNEL, KCACHE_BENCH_FLAVOUR are passed through; the .debs and
# the extracted files are reused between runs). TMPDIR is where the outputs and
# the cache roots go; KEEP=1 keeps that directory (samples.txt has every run).
#
# Method:
# - The input is read once (cat) to warm the page cache, then every tool runs
#   once untimed (warm-up: binaries, libraries, output directory).
# - `runs` rounds; each round runs every command once, and the order rotates
#   by one each round, so no tool always runs right after another.
# - Before every timed run, untimed: the previous output (for store: the whole
#   cache root) is removed and `sync` flushes dirty pages, so one tool's
#   write-back does not land in the next tool's time.
# - Wall time: bash's $EPOCHREALTIME (µs) around `/usr/bin/time -f %M CMD`;
#   peak RSS: /usr/bin/time's %M (KiB, the child's ru_maxrss). GNU time's own
#   %e has 10 ms resolution, too coarse for kcache strip. The wall includes the
#   fork/exec of /usr/bin/time; the "harness floor" row (`/usr/bin/time true`)
#   shows how much that is.
# - kcache strip and kcache store fsync what they write (store also its
#   blob directories and index); objcopy and eu-strip do not. That cost is in
#   kcache's numbers only.
# - CPU: user + system time of the child from /usr/bin/time (%U + %S, 10 ms
#   resolution): less disturbed than wall time when other work competes for
#   the CPUs, but the targets are on wall time.
# - Symbols: .symtab entries including the null entry, i.e. the count of
#   `readelf -sW` lines of the form "N: ..." (118,811 in the input).
# - .BTF identical: the section's bytes (offset and size from `readelf -SW`)
#   of the output and the input have the same SHA-256.
#
# Exit status: 0 when every target and every client check passes, 1 otherwise.
set -euo pipefail
export LC_ALL=C
runs=${1:-${RUNS:-7}}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

for t in go objcopy eu-strip readelf nm bpftool pahole addr2line sha256sum dd /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "strip.sh: $t not found (apt-get install binutils elfutils bpftool dwarves time)" >&2; exit 2; }
done

{ read -r V && read -r Z; } < <(bench/fetch-kernel.sh) || true
[ -s "$V" ] && [ -s "$Z" ] || { echo "strip.sh: fetch-kernel.sh gave no files" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kcache-strip.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
	echo "strip.sh: keeping $tmp" >&2
else
	trap 'rm -rf "$tmp"' EXIT
fi
log() { echo "strip.sh: $*" >&2; }

log "building kcache"
go build -o "$tmp/kcache" ./cmd/kcache
K=$tmp/kcache
key=bench-6.1-strip

tools=(kcache-strip objcopy eu-strip kcache-store floor)
out_of() { # the file a tool writes
	case $1 in
	kcache-strip) echo "$tmp/out.kcache" ;;
	objcopy) echo "$tmp/out.objcopy" ;;
	eu-strip) echo "$tmp/out.eu-strip" ;;
	esac
}
prepare() { # untimed, before each run
	case $1 in
	kcache-store) rm -rf "$tmp/root" ;;
	floor) ;;
	*) rm -f "$(out_of "$1")" ;;
	esac
	sync
}
cmdline() { # the timed command, one word per line
	case $1 in
	kcache-strip) printf '%s\n' "$K" strip "$V" -o "$(out_of "$1")" ;;
	objcopy) printf '%s\n' objcopy --strip-debug "$V" "$(out_of "$1")" ;;
	eu-strip) printf '%s\n' eu-strip -g -o "$(out_of "$1")" "$V" ;;
	kcache-store) printf '%s\n' "$K" --root "$tmp/root" store "$key" --image "$Z" --vmlinux "$V" --image-name bzImage ;;
	floor) printf '%s\n' true ;;
	esac
}

# run TOOL [timed]: one run; when timed, appends "TOOL wall_us rss_kib cpu_us" to samples.txt.
run() {
	local tool=$1 t0 t1 rss cpu
	local -a cmd
	mapfile -t cmd < <(cmdline "$tool")
	prepare "$tool"
	t0=${EPOCHREALTIME/./}
	if ! /usr/bin/time -f '%M %U %S' -o "$tmp/rss" "${cmd[@]}" >"$tmp/run.log" 2>&1; then
		log "$tool failed: ${cmd[*]}"
		cat "$tmp/run.log" >&2
		exit 1
	fi
	t1=${EPOCHREALTIME/./}
	if [ -s "$tmp/run.log" ]; then
		case $tool in kcache-*) grep -i -e warn -e error "$tmp/run.log" | sed "s/^/strip.sh: $tool said: /" >&2 || true ;; esac
	fi
	read -r rss cpu < <(tail -n 1 "$tmp/rss" | awk '{ printf "%d %d\n", $1, ($2 + $3) * 1e6 }')
	[ "${2:-}" = timed ] && echo "$tool $((t1 - t0)) $rss $cpu" >>"$tmp/samples.txt"
	return 0
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
log "warming the page cache and running every tool once (untimed)"
cat "$V" "$Z" >/dev/null
for t in "${tools[@]}"; do run "$t"; done

log "$runs rounds of: ${tools[*]} (order rotates)"
: >"$tmp/samples.txt"
for ((r = 0; r < runs; r++)); do
	for ((i = 0; i < ${#tools[@]}; i++)); do
		run "${tools[(r + i) % ${#tools[@]}]}" timed
	done
done

# agg WHAT TOOL FIELD: median (or max, min) of column FIELD (2 wall µs, 3 rss KiB, 4 user+sys CPU µs).
agg() {
	awk -v t="$2" -v f="$3" '$1 == t { print $f }' "$tmp/samples.txt" | sort -n | awk -v what="$1" '
		{ v[NR] = $1 }
		END {
			if (what == "min") print v[1]
			else if (what == "max") print v[NR]
			else if (NR % 2) print v[(NR + 1) / 2]
			else printf "%d\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}
symbols() { readelf -sW "$1" | grep -c -E '^ *[0-9]+: '; }
# btf_sha FILE: SHA-256 of the .BTF section's bytes ("none" if there is no .BTF with bytes).
btf_sha() {
	local off size
	read -r off size < <(readelf -SW "$1" | sed -E 's/^ *\[ *[0-9]+\] //' |
		awk '$1 == ".BTF" && $2 != "NOBITS" && !n++ { print $4, $5 }') || true
	if [ -z "${off:-}" ]; then echo none; return; fi
	dd if="$1" iflag=skip_bytes,count_bytes skip=$((16#$off)) count=$((16#$size)) bs=1M status=none | sha256sum | cut -d' ' -f1
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }

# The stored vmlinux blob of the last store run.
blob=$("$K" --root "$tmp/root" show "$key" --json | sed -n -E 's/^ *"vmlinux_path": "(.*)",?$/\1/p')
stripped=$("$K" --root "$tmp/root" show "$key" --json | sed -n -E 's/^ *"vmlinux_stripped": (.*),?$/\1/p' | tr -d ,)
in_btf=$(btf_sha "$V")
in_syms=$(symbols "$V")

declare -A size syms btf
for t in kcache-strip objcopy eu-strip kcache-store; do
	f=$(out_of "$t")
	[ "$t" = kcache-store ] && f=$blob
	size[$t]=$(stat -c %s "$f")
	syms[$t]=$(symbols "$f")
	if [ "$(btf_sha "$f")" = "$in_btf" ]; then btf[$t]=yes; else btf[$t]=no; fi
done

uname_r=$(basename "$V" | sed 's/^vmlinux-//')
echo
echo "## kcache strip vs objcopy --strip-debug vs eu-strip -g ($uname_r)"
echo
echo "input: $V, $(stat -c %s "$V") B ($(mib "$(stat -c %s "$V")") MiB), $in_syms symbols; bzImage $(stat -c %s "$Z") B"
echo "$runs timed runs per command, interleaved; warm page cache; $(nproc) CPUs; load average $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
echo "| command | median wall ms | min–max ms | median CPU ms | median peak RSS MiB | output bytes | output MiB | symbols | .BTF identical |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
for t in "${tools[@]}"; do
	case $t in
	kcache-strip) name='`kcache strip V -o OUT`' ;;
	objcopy) name='`objcopy --strip-debug V OUT`' ;;
	eu-strip) name='`eu-strip -g -o OUT V`' ;;
	kcache-store) name='`kcache store KEY --image vmlinuz --vmlinux V --image-name bzImage` (fresh root)' ;;
	floor) name='harness floor (`/usr/bin/time true`)' ;;
	esac
	if [ "$t" = floor ]; then
		cols="— | — | — | —"
	else
		cols="${size[$t]} | $(mib "${size[$t]}") | ${syms[$t]} | ${btf[$t]}"
		[ "$t" = kcache-store ] && cols="${size[$t]} (vmlinux blob) | $(mib "${size[$t]}") | ${syms[$t]} | ${btf[$t]}"
	fi
	echo "| $name | $(ms "$(agg median "$t" 2)") | $(ms "$(agg min "$t" 2)")–$(ms "$(agg max "$t" 2)") | $(ms "$(agg median "$t" 4)") | $(mib $(($(agg median "$t" 3) * 1024))) | $cols |"
done

obj=$(agg median objcopy 2)
ks=$(agg median kcache-strip 2)
kst=$(agg median kcache-store 2)
eu=$(agg median eu-strip 2)
echo
awk -v a="$ks" -v b="$obj" 'BEGIN { printf "ratio kcache-strip wall / objcopy wall = %.3f (objcopy takes %.1fx as long)\n", a / b, b / a }'
awk -v a="$kst" -v b="$obj" 'BEGIN { printf "ratio kcache-store wall / objcopy wall = %.3f\n", a / b }'
awk -v a="$ks" -v b="$eu" 'BEGIN { printf "(for reference: kcache-strip / eu-strip = %.3f)\n", a / b }'

fails=0
check() { # check NAME CONDITION-DESCRIPTION 0|1
	if [ "$3" = 1 ]; then echo "PASS  $1 ($2)"; else echo "FAIL  $1 ($2)"; fails=$((fails + 1)); fi
}
echo
echo "### targets"
rss_max=$(agg max kcache-strip 3)
check "kcache strip median wall <= 1/5 of objcopy's" "$(ms "$ks") ms vs $(ms "$obj")/5 = $(awk -v b="$obj" 'BEGIN { printf "%.1f", b / 5000 }') ms" "$((ks * 5 <= obj))"
check "kcache strip peak RSS <= 64 MiB" "max over runs $(mib $((rss_max * 1024))) MiB, median $(mib $(($(agg median kcache-strip 3) * 1024))) MiB" "$((rss_max <= 65536))"
check "kcache strip output <= 16 MiB" "${size[kcache-strip]} B = $(mib "${size[kcache-strip]}") MiB" "$((${size[kcache-strip]} <= 16777216))"
check "kcache strip keeps >= 118,000 symbols" "${syms[kcache-strip]} of $in_syms" "$((${syms[kcache-strip]} >= 118000))"
check ".BTF byte-identical to the input's" "sha256 ${in_btf:0:16}…" "$([ "${btf[kcache-strip]}" = yes ] && echo 1 || echo 0)"
check "kcache store (bzImage + vmlinux) median wall < objcopy --strip-debug's" "$(ms "$kst") ms vs $(ms "$obj") ms" "$((kst < obj))"

echo
echo "### client tools on kcache strip's output"
O=$(out_of kcache-strip)
readelf -hSlW "$O" >/dev/null 2>"$tmp/readelf.err" && rc=0 || rc=$?
check "readelf -hSlW: exit 0, empty stderr" "exit $rc, $(wc -c <"$tmp/readelf.err") B stderr" "$([ "$rc" = 0 ] && [ ! -s "$tmp/readelf.err" ] && echo 1 || echo 0)"
readelf -n "$O" >"$tmp/notes" 2>&1 && rc=0 || rc=$?
check "readelf -n: exit 0" "exit $rc, $(grep -m1 'Build ID' "$tmp/notes" | sed 's/^ *//' || echo 'no build ID')" "$([ "$rc" = 0 ] && echo 1 || echo 0)"
sched=$(nm "$O" | awk '$2 == "T" && $3 == "schedule" && !n++ { print $1 }')
check "nm: ' T schedule\$'" "${sched:-missing}" "$([ -n "$sched" ] && echo 1 || echo 0)"
bt_in=$(bpftool btf dump file "$V" format raw | grep -c '^\[' || true)
bt_out=$(bpftool btf dump file "$O" format raw | grep -c '^\[' || true)
check "bpftool btf dump: same type count as the input" "$bt_out vs $bt_in" "$([ "$bt_out" -gt 0 ] && [ "$bt_out" = "$bt_in" ] && echo 1 || echo 0)"
pahole -F btf -C task_struct "$O" >"$tmp/pahole" 2>&1 && rc=0 || rc=$?
check "pahole -F btf -C task_struct" "exit $rc, $(wc -l <"$tmp/pahole") lines" "$([ "$rc" = 0 ] && grep -q '^struct task_struct {' "$tmp/pahole" && echo 1 || echo 0)"
if [ -n "$sched" ]; then
	addr=$(printf '%x' $((16#$sched + 8)))
	a2l=$(addr2line -f -e "$O" "0x$addr" 2>&1 | sed -n 1p)
else
	addr=? a2l=
fi
check "addr2line -f 0x$addr (schedule+8) prints schedule" "${a2l:-nothing}" "$([ "$a2l" = schedule ] && echo 1 || echo 0)"
check "store's vmlinux blob is stripped and equals kcache strip's output" "vmlinux_stripped=$stripped" "$([ "$stripped" = true ] && cmp -s "$blob" "$O" && echo 1 || echo 0)"

echo
if [ "$fails" -gt 0 ]; then
	echo "$fails check(s) FAILED"
	exit 1
fi
echo "all checks passed"
