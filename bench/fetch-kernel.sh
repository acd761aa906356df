#!/bin/sh
# Fetches a real Debian distro kernel for the strip benchmark (bench/strip.sh)
# and for CI: the debug vmlinux from linux-image-ABI-FLAVOUR-dbg and the bzImage
# (vmlinuz) from the matching linux-image-ABI-FLAVOUR-unsigned, both at the same
# package version. Prints two lines on stdout, nothing else:
#
#   /path/to/vmlinux-ABI-FLAVOUR      (ELF with DWARF, ~560 MiB for 6.1.0-50)
#   /path/to/vmlinuz-ABI-FLAVOUR      (bzImage, ~14 MiB)
#
#   bench/fetch-kernel.sh [ABI]       default $KCACHE_BENCH_KERNEL or 6.1.0-50
#
# Environment:
#   KCACHE_BENCH_CACHE    where the .debs and the extracted files live, reused
#                         between runs (default $HOME/.cache/kcache-bench)
#   KCACHE_BENCH_KERNEL   kernel ABI, e.g. 6.1.0-50 (the one measured in
#                         strip-notes.md: package version 6.1.176-1)
#   KCACHE_BENCH_FLAVOUR  Debian flavour (default cloud-amd64)
#
# Nothing is downloaded or extracted when the files are already there. The
# .debs come from `apt-get download` (run from the cache dir; `apt-get update`
# only when the first attempt fails), so the machine needs a Debian bookworm
# (or other release carrying that ABI) sources list. Only ./usr/lib/debug/boot/
# (dbg) and ./boot/ (unsigned) are unpacked, into a temp dir first and then
# moved into place, so an interrupted run never leaves a truncated vmlinux that
# a later run would trust. Needs: apt-get, dpkg-deb, tar. Debian keeps only the
# newest ABIs on the mirror; when the pinned one is gone, pick a newer
# KCACHE_BENCH_KERNEL or put the .debs from Debian's snapshot archive into the
# cache dir by hand (any linux-image-ABI-FLAVOUR-{dbg,unsigned}_*.deb there is
# used as is).
set -eu
abi=${1:-${KCACHE_BENCH_KERNEL:-6.1.0-50}}
flavour=${KCACHE_BENCH_FLAVOUR:-cloud-amd64}
cache=${KCACHE_BENCH_CACHE:-$HOME/.cache/kcache-bench}
dbg=linux-image-$abi-$flavour-dbg
unsigned=linux-image-$abi-$flavour-unsigned
x=$cache/x
vmlinux=$x/usr/lib/debug/boot/vmlinux-$abi-$flavour
vmlinuz=$x/boot/vmlinuz-$abi-$flavour

log() { echo "fetch-kernel: $*" >&2; }

# newest_deb PKG [VERSION]: path of the newest PKG_*.deb (or PKG_VERSION_*.deb) in the cache, or "".
newest_deb() {
	if [ $# -ge 2 ]; then
		ls "$cache/$1_$2_"*.deb 2>/dev/null | sort -V | tail -n 1
	else
		ls "$cache/$1_"*_*.deb 2>/dev/null | sort -V | tail -n 1
	fi
}

# download PKG[=VERSION] into the cache; apt-get update and retry once on failure.
download() {
	dl=$(mktemp -d "$cache/.download.XXXXXX")
	if ! (cd "$dl" && apt-get download "$1" >&2); then
		log "apt-get download $1 failed; running apt-get update and retrying"
		if [ "$(id -u)" -eq 0 ]; then apt-get update >&2; else sudo apt-get update >&2; fi
		if ! (cd "$dl" && apt-get download "$1" >&2); then
			rm -rf "$dl"
			log "cannot download $1 (is the ABI still on the mirror? pick a newer KCACHE_BENCH_KERNEL)"
			exit 1
		fi
	fi
	mv "$dl"/*.deb "$cache/"
	rmdir "$dl"
}

# extract DEB MEMBER FILE: unpack MEMBER (a ./dir/) of DEB unless FILE exists.
extract() {
	[ -s "$3" ] && return 0
	log "extracting $2 from $(basename "$1")"
	tmpx=$(mktemp -d "$cache/.extract.XXXXXX")
	dpkg-deb --fsys-tarfile "$1" | tar -x -C "$tmpx" "$2"
	# Move file by file, so files already in $x (from the other package) stay.
	(cd "$tmpx" && find . -type f) | while IFS= read -r f; do
		mkdir -p "$x/$(dirname "$f")"
		mv -f "$tmpx/$f" "$x/$f"
	done
	rm -rf "$tmpx"
	[ -s "$3" ] || { log "$(basename "$1") has no $3"; exit 1; }
}

mkdir -p "$cache"
if [ ! -s "$vmlinux" ] || [ ! -s "$vmlinuz" ]; then
	dbg_deb=$(newest_deb "$dbg")
	if [ -z "$dbg_deb" ]; then
		log "downloading $dbg"
		download "$dbg"
		dbg_deb=$(newest_deb "$dbg")
	fi
	# The image must be the build the debug info belongs to: same package version.
	version=$(dpkg-deb -f "$dbg_deb" Version)
	unsigned_deb=$(newest_deb "$unsigned" "$version")
	if [ -z "$unsigned_deb" ]; then
		log "downloading $unsigned=$version"
		download "$unsigned=$version"
		unsigned_deb=$(newest_deb "$unsigned" "$version")
	fi
	extract "$dbg_deb" ./usr/lib/debug/boot/ "$vmlinux"
	extract "$unsigned_deb" ./boot/ "$vmlinuz"
fi
log "using $vmlinux ($(wc -c <"$vmlinux") B) and $vmlinuz ($(wc -c <"$vmlinuz") B)"
for deb in $(newest_deb "$dbg") $(newest_deb "$unsigned"); do
	log "  from $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
done
echo "$vmlinux"
echo "$vmlinuz"
