package strip

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrNoIKConfig means the kernel was built without CONFIG_IKCONFIG (no
// IKCFG_ST marker), so it carries no embedded config.
var ErrNoIKConfig = errors.New("no embedded kernel config (IKCONFIG): the kernel was built without CONFIG_IKCONFIG")

var (
	ikcfgStart = []byte("IKCFG_ST")
	ikcfgEnd   = []byte("IKCFG_ED")
)

// maxConfig bounds the decompressed config; real ones are ~100-300 KiB.
const maxConfig = 16 << 20

// IKConfig extracts the kernel config embedded between IKCFG_ST and
// IKCFG_ED in data (typically the bytes of .rodata): one gzip member
// directly after the first start marker.
func IKConfig(data []byte) (string, error) {
	i := bytes.Index(data, ikcfgStart)
	if i < 0 {
		return "", ErrNoIKConfig
	}
	blob := data[i+len(ikcfgStart):]
	if j := bytes.Index(blob, ikcfgEnd); j >= 0 {
		blob = blob[:j]
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		return "", fmt.Errorf("embedded kernel config: %w", err)
	}
	// The kernel's blob is one gzip member followed by IKCFG_ED; without
	// this the reader would try to parse the marker as a second member.
	zr.Multistream(false)
	text, err := io.ReadAll(io.LimitReader(zr, maxConfig+1))
	if err != nil {
		return "", fmt.Errorf("embedded kernel config: %w", err)
	}
	if len(text) > maxConfig {
		return "", fmt.Errorf("embedded kernel config is larger than %d bytes", maxConfig)
	}
	return string(text), nil
}

// IKConfigELF reads the embedded config of an ELF vmlinux from its .rodata
// section (where the kernel puts it), reading nothing else. A vmlinux
// without .rodata, or without IKCONFIG in it, is ErrNoIKConfig; a .rodata
// that cannot be read is an error that says so, not ErrNoIKConfig.
func IKConfigELF(in io.ReaderAt, size int64) (string, error) {
	f, err := parse(in, size)
	if err != nil {
		return "", err
	}
	data, err := f.sectionBytes(".rodata")
	if err != nil {
		return "", err
	}
	if data == nil {
		return "", ErrNoIKConfig
	}
	return IKConfig(data)
}

// ConfigValue returns the value of option name (with or without the
// CONFIG_ prefix) in a kernel config: "y", "m", a number or a quoted
// string as written. An option that is commented out ("# CONFIG_X is not
// set") or absent reports ok=false.
func ConfigValue(config, name string) (value string, ok bool) {
	if !strings.HasPrefix(name, "CONFIG_") {
		name = "CONFIG_" + name
	}
	prefix := name + "="
	for line := range strings.Lines(config) {
		if v, found := strings.CutPrefix(strings.TrimSpace(line), prefix); found {
			return v, true
		}
	}
	return "", false
}
