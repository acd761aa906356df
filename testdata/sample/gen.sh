#!/bin/sh
# Regenerates the sample kernel used by the README's quick start:
#   vmlinux  a small static ELF with kernel-named symbols and DWARF
#   bzImage  a stand-in boot image (the "HdrS" magic at 0x202, filler after)
# Reproducible: no timestamps, fixed paths in debug info.
set -eu
cd "$(dirname "$0")"
gcc -g -O1 -static -nostdlib -fno-asynchronous-unwind-tables \
    -fdebug-prefix-map="$(pwd)"=/kcache/testdata/sample \
    -Wl,-e,startup_64 -Wl,--build-id=sha1 -o vmlinux sample.c
{
    head -c 514 /dev/zero
    printf 'HdrS'
    yes 'kcache sample boot image, not a bootable kernel' | head -c 65000
} > bzImage
