#!/bin/sh
# gen.sh - regenerate the ELF fixtures of the strip tests (testdata/elf).
#
# Outputs (all committed; tests only read them and need no cross tools):
#   vmlinux-x86_64  vmlinux-i386  vmlinux-s390x  vmlinux-ppc32
#       vmlinux-shaped ET_EXEC files (ELF64 LSB RELA, ELF32 LSB REL,
#       ELF64 MSB RELA, ELF32 MSB RELA) with: .text (schedule, _start),
#       .init.text, .notes (GNU build ID, covered by PT_NOTE), .rodata with
#       IKCFG_ST + gzip(config) + IKCFG_ED, an SHF_ALLOC .BTF inside the
#       first PT_LOAD (pahole, target byte order), .data, .data..percpu at
#       vaddr 0 (runqueues), .init.data, .bss (+ .sdata/.sbss on ppc32),
#       DWARF 5, .rela.* / .rel.* (ld --emit-relocs), .comment, .BTF.ext
#       (a valid, empty btf_ext header added with objcopy --add-section so
#       tests can check that it is deleted), 4 PT_LOAD + 1 PT_NOTE.
#   vmlinux-x86_64-nobtf       same link without .BTF (and without .BTF.ext)
#   vmlinux-x86_64-noikconfig  same link without the IKCFG_* blob (and
#                              without .BTF.ext)
#   obj-x86_64.o obj-i386.o obj-s390x.o obj-ppc32.o
#       ET_REL objects of src/kernel.c (-g; .rela.* / .rel.*; no program
#       headers, no .BTF, no IKCONFIG, no build ID)
#   EXPECTED.json
#       per fixture: ELF class, data (byte order), type, machine, kind of
#       relocation sections, IKCONFIG text file ("config" or ""), build ID,
#       entry, address and size of schedule, value of runqueues, section
#       and .symtab entry counts, whether .BTF / .BTF.ext exist. Names use
#       Go's debug/elf spellings (ELFCLASS64, ELFDATA2MSB, ET_EXEC, EM_S390).
# Input kept next to them:
#   config   the exact bytes that are gzipped into IKCONFIG, so tests can
#            compare the extracted text byte for byte
#   src/kernel.c        C source (one object per section kind)
#   src/ikconfig.S      IKCONFIG framing, as in the kernel's kernel/configs.c
#   src/vmlinux.lds.in  linker script; @BASE@ / @LOAD_OFFSET@ set per arch
#
# Needs these Debian 12 (bookworm) packages:
#   gcc binutils              x86_64 and i386 (gcc -m32 -c needs no
#                             gcc-multilib: nothing links against libc)
#   gcc-s390x-linux-gnu binutils-s390x-linux-gnu
#   gcc-powerpc-linux-gnu binutils-powerpc-linux-gnu
#   dwarves                   pahole (DWARF -> BTF)
#   gzip coreutils sed mawk   (all Essential / default)
# It stops with a message naming the package if a tool is missing.
#
# Reproducible: gzip -n (no name, no time stamp), -fdebug-prefix-map (no
# build path in DWARF), fixed file names, LC_ALL=C, everything built in a
# fresh temporary directory. Running it again with the same toolchain gives
# byte-identical files (check with sha256sum); other gcc/binutils/pahole
# versions give other bytes and build IDs, so regenerate only when the
# recipe changes and commit the fixtures together with EXPECTED.json.
#
# Usage: sh testdata/elf/gen.sh      (from any directory)
set -eu
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
src=$here/src

die() {
	echo "gen.sh: $*" >&2
	exit 1
}
need() { # need TOOL DEBIAN-PACKAGE
	command -v "$1" >/dev/null 2>&1 ||
		die "missing $1: install the Debian package $2 (apt-get install $2)"
}
need gcc gcc
need ld binutils
need objcopy binutils
need readelf binutils
need s390x-linux-gnu-gcc gcc-s390x-linux-gnu
need s390x-linux-gnu-ld binutils-s390x-linux-gnu
need s390x-linux-gnu-objcopy binutils-s390x-linux-gnu
need powerpc-linux-gnu-gcc gcc-powerpc-linux-gnu
need powerpc-linux-gnu-ld binutils-powerpc-linux-gnu
need powerpc-linux-gnu-objcopy binutils-powerpc-linux-gnu
need pahole dwarves
need gzip gzip
need sha256sum coreutils
need awk mawk
for f in kernel.c ikconfig.S vmlinux.lds.in; do
	[ -f "$src/$f" ] || die "missing source $src/$f"
done
[ -f "$here/config" ] || die "missing $here/config (the IKCONFIG text)"

tmp=$(mktemp -d)
trap 'rc=$?; rm -rf "$tmp"; [ $rc -eq 0 ] || echo "gen.sh: FAILED (exit $rc)" >&2' EXIT
trap 'exit 130' INT TERM

gzip -n -9 <"$here/config" >"$tmp/config.gz"

# build NAME CROSS-PREFIX "ARCH-CFLAGS" "LD-EMULATION" BFD-FORMAT BFD-ARCH
#       BASE LOAD_OFFSET BTF-EXT-HEADER-START(printf escapes)
build() {
	name=$1 cross=$2 acflags=$3 ldemu=$4 bfdfmt=$5 bfdarch=$6
	base=$7 loadoff=$8 extmagic=$9
	echo "gen.sh: building $name" >&2
	d=$tmp/$name
	mkdir "$d"
	cp "$src/kernel.c" "$src/ikconfig.S" "$tmp/config.gz" "$d/"
	sed -e "s/@BASE@/$base/g" -e "s/@LOAD_OFFSET@/$loadoff/g" \
		"$src/vmlinux.lds.in" >"$d/vmlinux.lds"
	(
		cd "$d"
		# shellcheck disable=SC2086
		"${cross}gcc" -O1 -g -ffreestanding -fno-pic -fno-pie \
			-fno-stack-protector -fno-asynchronous-unwind-tables \
			-fno-common -Wall -Werror -fdebug-prefix-map="$d"=. \
			$acflags -c kernel.c -o kernel.o
		# shellcheck disable=SC2086
		"${cross}gcc" -fno-pic -fno-pie $acflags -c ikconfig.S -o ikconfig.o
		# BTF from the object's DWARF, in the target's byte order, wrapped
		# as the kernel's link step does: an alloc, read-only .BTF section.
		pahole --btf_encode_detached=.btf.vmlinux.bin kernel.o
		"${cross}objcopy" -I binary -O "$bfdfmt" -B "$bfdarch" \
			--rename-section .data=.BTF,alloc,load,readonly,data,contents \
			.btf.vmlinux.bin btf.o
		# struct btf_ext_header (24 bytes): magic 0xeb9f, version 1,
		# flags 0, hdr_len 24, func_info off/len 0, line_info off/len 0.
		{
			printf "$extmagic"
			head -c 16 /dev/zero
		} >btf.ext
		link() { # link OUTPUT OBJECT...
			out=$1
			shift
			# shellcheck disable=SC2086
			"${cross}ld" $ldemu -T vmlinux.lds --emit-relocs \
				--build-id=sha1 -z max-page-size=0x1000 \
				-z noexecstack --no-warn-rwx-segments --fatal-warnings \
				-o "$out" "$@"
		}
		link vmlinux kernel.o ikconfig.o btf.o
		"${cross}objcopy" --add-section .BTF.ext=btf.ext vmlinux
		cp vmlinux "$here/vmlinux-$name"
		cp kernel.o "$here/obj-$name.o"
		if [ "$name" = x86_64 ]; then
			link vmlinux-nobtf kernel.o ikconfig.o
			link vmlinux-noikconfig kernel.o btf.o
			cp vmlinux-nobtf "$here/vmlinux-$name-nobtf"
			cp vmlinux-noikconfig "$here/vmlinux-$name-noikconfig"
		fi
	)
}

LE_EXT='\237\353\001\000\030\000\000\000'
BE_EXT='\353\237\001\000\000\000\000\030'
build x86_64 "" "-m64 -mcmodel=kernel -mno-red-zone -fcf-protection=none" \
	"-m elf_x86_64" elf64-x86-64 i386:x86-64 \
	0xffffffff81000000 0xffffffff80000000 "$LE_EXT"
build i386 "" "-m32 -march=i686 -fcf-protection=none" \
	"-m elf_i386" elf32-i386 i386 \
	0xc1000000 0xc0000000 "$LE_EXT"
build s390x s390x-linux-gnu- "-m64" \
	"-m elf64_s390" elf64-s390 s390:64-bit \
	0x100000 0 "$BE_EXT"
build ppc32 powerpc-linux-gnu- "-m32" \
	"-m elf32ppclinux" elf32-powerpc powerpc:common \
	0xc0000000 0xc0000000 "$BE_EXT"

# describe FILE: one JSON object from the host readelf (which reads every
# architecture); also checks the shape each fixture must have.
describe() {
	f=$1
	base=${f##*/}
	hdr=$(readelf -hW "$f")
	field() { printf '%s\n' "$hdr" | sed -n "s/^ *$1: *//p"; }
	case $(field Class) in
	ELF32) class=ELFCLASS32 ;;
	ELF64) class=ELFCLASS64 ;;
	*) die "$base: unexpected class" ;;
	esac
	case $(field Data) in
	*"little endian") data=ELFDATA2LSB order=little ;;
	*"big endian") data=ELFDATA2MSB order=big ;;
	*) die "$base: unexpected data encoding" ;;
	esac
	case $(field Type) in
	EXEC*) type=ET_EXEC ;;
	REL*) type=ET_REL ;;
	*) die "$base: unexpected type" ;;
	esac
	case $(field Machine) in
	"Advanced Micro Devices X86-64") machine=EM_X86_64 ;;
	"Intel 80386") machine=EM_386 ;;
	"IBM S/390") machine=EM_S390 ;;
	PowerPC) machine=EM_PPC ;;
	*) die "$base: unexpected machine" ;;
	esac
	entry=$(field "Entry point address")
	nsec=$(field "Number of section headers")
	secs=$(readelf -SW "$f")
	has() { printf '%s\n' "$secs" | awk -v n="$1" '$2 == n || $3 == n { found = 1 } END { exit !found }'; }
	if has .rela.text; then rel=RELA; elif has .rel.text; then rel=REL; else die "$base: no relocation section"; fi
	has .debug_info || die "$base: no DWARF"
	btf=false btfext=false ikconfig="" buildid=""
	has .BTF && btf=true
	has .BTF.ext && btfext=true
	nst=$(grep -c IKCFG_ST "$f" || true)
	[ "$nst" -le 1 ] || die "$base: IKCFG_ST found $nst times"
	[ "$nst" -eq 1 ] && ikconfig=config
	if [ "$type" = ET_EXEC ]; then
		buildid=$(readelf -n "$f" | awk '/Build ID:/ { print $3 }')
		[ -n "$buildid" ] || die "$base: no build ID"
	fi
	syms=$(readelf -sW "$f")
	nsym=$(printf '%s\n' "$syms" | grep -cE '^ *[0-9]+:')
	sym() { printf '%s\n' "$syms" | awk -v n="$1" -v c="$2" '$8 == n { print $c; exit }'; }
	hex() { v=$(printf '%s' "$1" | sed 's/^0*//'); printf '0x%s' "${v:-0}"; }
	sched=$(sym schedule 2)
	ssize=$(sym schedule 3)
	rq=$(sym runqueues 2)
	[ -n "$sched" ] && [ -n "$rq" ] || die "$base: schedule or runqueues missing"
	[ "$(sym schedule 4)" = FUNC ] && [ "$(sym schedule 5)" = GLOBAL ] ||
		die "$base: schedule is not a global function"
	printf '    {\n'
	printf '      "file": "%s",\n' "$base"
	printf '      "class": "%s",\n      "data": "%s",\n      "byte_order": "%s",\n' "$class" "$data" "$order"
	printf '      "type": "%s",\n      "machine": "%s",\n      "relocations": "%s",\n' "$type" "$machine" "$rel"
	printf '      "ikconfig": "%s",\n      "build_id": "%s",\n' "$ikconfig" "$buildid"
	printf '      "btf": %s,\n      "btf_ext": %s,\n' "$btf" "$btfext"
	printf '      "entry": "%s",\n' "$entry"
	printf '      "schedule": "%s",\n      "schedule_size": %s,\n' "$(hex "$sched")" "$ssize"
	printf '      "runqueues": "%s",\n' "$(hex "$rq")"
	printf '      "sections": %s,\n      "symtab_entries": %s\n' "$nsec" "$nsym"
	printf '    }'
}

echo "gen.sh: writing EXPECTED.json" >&2
{
	printf '{\n'
	printf '  "comment": "generated by gen.sh; schedule/runqueues are st_value (section offsets in ET_REL files); symtab_entries counts the null entry",\n'
	printf '  "config": "config",\n'
	printf '  "fixtures": [\n'
	sep=""
	for f in vmlinux-x86_64 vmlinux-x86_64-nobtf vmlinux-x86_64-noikconfig \
		vmlinux-i386 vmlinux-s390x vmlinux-ppc32 \
		obj-x86_64.o obj-i386.o obj-s390x.o obj-ppc32.o; do
		printf '%s' "$sep"
		describe "$here/$f"
		sep=",
"
	done
	printf '\n  ]\n}\n'
} >"$tmp/EXPECTED.json"
mv "$tmp/EXPECTED.json" "$here/EXPECTED.json"

cd "$here"
sha256sum config vmlinux-* obj-*.o EXPECTED.json
