#!/usr/bin/env bash
# The shared tier (issue 8): push and pull of the real Debian kernel entry
# (bzImage + stripped vmlinux from bench/fetch-kernel.sh) through a versitygw
# S3 server on 127.0.0.1, against curl moving the same two files with the
# same SigV4 authentication (what a script would do today):
#
#   push        kcache push KEY into an empty bucket prefix
#   push again  kcache push KEY when the remote already has everything
#   pull        kcache pull KEY into an empty cache root (digests checked)
#   curl put    two `curl --aws-sigv4 -T FILE` uploads
#   curl get    two `curl --aws-sigv4 -o FILE` downloads, then sha256sum -c
#
#   bench/remote.sh [rounds]        default 7 (or $ROUNDS)
#
# Every round runs each command once; medians over rounds. Bytes moved come
# from `--json` (blob bytes; the manifest is ~400 bytes). kcache and
# kcache-remote are built with CGO_ENABLED=0; versitygw is $KCACHE_VERSITYGW,
# else versitygw on PATH, else /opt/kcache-tools/versitygw. Its data
# directory is on the same disk as the caches.
set -euo pipefail
export LC_ALL=C
rounds=${1:-${ROUNDS:-7}}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/kcache-remote.XXXXXX")
vgw_pid=
trap '[ -n "$vgw_pid" ] && kill "$vgw_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
log() { echo "remote.sh: $*" >&2; }
now() { echo "${EPOCHREALTIME/./}"; }
moved() { sed -n 's/^ *"bytes": \([0-9]*\),*$/\1/p' "$1"; }

vgw=${KCACHE_VERSITYGW:-$(command -v versitygw || echo /opt/kcache-tools/versitygw)}
[ -x "$vgw" ] || { log "versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"; exit 1; }
{ read -r vmlinux; read -r vmlinuz; } < <(bench/fetch-kernel.sh)

CGO_ENABLED=0 go build -o "$tmp/bin/kcache" ./cmd/kcache
CGO_ENABLED=0 go build -tags kcache_s3 -o "$tmp/bin/kcache-remote" ./cmd/kcache
K=$tmp/bin/kcache

port=$(shuf -i 20000-60000 -n 1)
mkdir -p "$tmp/s3/bench"
"$vgw" --access benchkey --secret benchsecret123 --port "127.0.0.1:$port" --quiet posix "$tmp/s3" >"$tmp/vgw.log" 2>&1 &
vgw_pid=$!
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
kill -0 "$vgw_pid" || { log "versitygw did not start:"; cat "$tmp/vgw.log" >&2; exit 1; }
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret123 AWS_REGION=us-east-1
sig=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "benchkey:benchsecret123" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -sSf)

"$K" --root "$tmp/src" store debian-6.1 --image "$vmlinuz" --vmlinux "$vmlinux" --version 6.1.0 >/dev/null
mapfile -t paths < <("$K" --root "$tmp/src" lookup debian-6.1)
image=${paths[0]} stripped=${paths[1]}
ls -l "$image" "$stripped" >&2

: >"$tmp/samples"
for r in $(seq "$rounds"); do
	export KCACHE_REMOTE=s3://bench/r$r
	sync
	t0=$(now); "$K" --root "$tmp/src" push debian-6.1 --json >"$tmp/push.json"; t1=$(now)
	echo "push $((t1 - t0)) $(moved "$tmp/push.json")" >>"$tmp/samples"
	t0=$(now); "$K" --root "$tmp/src" push debian-6.1 --json >"$tmp/push2.json"; t1=$(now)
	echo "push_again $((t1 - t0)) $(moved "$tmp/push2.json")" >>"$tmp/samples"
	rm -rf "$tmp/dst"; sync
	t0=$(now); "$K" --root "$tmp/dst" pull debian-6.1 --json >"$tmp/pull.json"; t1=$(now)
	echo "pull $((t1 - t0)) $(moved "$tmp/pull.json")" >>"$tmp/samples"

	base=http://127.0.0.1:$port/bench/curl$r
	sync
	t0=$(now)
	curl "${sig[@]}" -T "$image" "$base/image" -o /dev/null
	curl "${sig[@]}" -T "$stripped" "$base/vmlinux" -o /dev/null
	t1=$(now)
	echo "curl_put $((t1 - t0)) $(( $(stat -c %s "$image") + $(stat -c %s "$stripped") ))" >>"$tmp/samples"
	rm -rf "$tmp/get"; mkdir "$tmp/get"; sync
	t0=$(now)
	curl "${sig[@]}" -o "$tmp/get/image" "$base/image"
	curl "${sig[@]}" -o "$tmp/get/vmlinux" "$base/vmlinux"
	(cd "$tmp/get" && printf '%s  image\n%s  vmlinux\n' "$(basename "$image")" "$(basename "$stripped")" | sha256sum -c --quiet)
	t1=$(now)
	echo "curl_get $((t1 - t0)) $(( $(stat -c %s "$image") + $(stat -c %s "$stripped") ))" >>"$tmp/samples"
	sync
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk -v n="$1" -v name="$2" '$1==name {print $2/1000}' "$tmp/samples" | median; }
bytes() { awk -v name="$1" '$1==name {print $3}' "$tmp/samples" | sort -u | tr '\n' ' '; }
echo "rounds $rounds; image $(stat -c %s "$image") B, stripped vmlinux $(stat -c %s "$stripped") B"
printf '%-11s %10s %14s\n' what "median ms" "bytes moved"
for w in push push_again pull curl_put curl_get; do
	printf '%-11s %10.1f %14s\n' "$w" "$(ms "$rounds" "$w")" "$(bytes "$w")"
done
echo "push / curl put = $(awk -v a="$(ms "$rounds" push)" -v b="$(ms "$rounds" curl_put)" 'BEGIN{printf "%.2f", a/b}')"
echo "pull / curl get = $(awk -v a="$(ms "$rounds" pull)" -v b="$(ms "$rounds" curl_get)" 'BEGIN{printf "%.2f", a/b}')"
