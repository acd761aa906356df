package kcache

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest cache key accepted, in bytes. It keeps lock file
// names (key + ".lock") well under the 255-byte limit of common filesystems.
const MaxKeyLen = 200

// ErrInvalid is matched by every ValidationError and by every other error
// that rejects an argument (inconsistent metadata, a malformed hash or time).
var ErrInvalid = errors.New("invalid argument")

// ValidationError says which rule a cache key or image name broke.
type ValidationError struct {
	What  string // "cache key" or "image name"
	Value string
	Rule  string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.What, e.Value, e.Rule)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// invalidError is a bad argument other than a key or image name (inconsistent
// metadata, a malformed hash or time). It is matched by ErrInvalid, so callers
// (the CLI's exit code 2) treat it like any other invalid argument.
type invalidError struct{ err error }

func (e *invalidError) Error() string        { return e.err.Error() }
func (e *invalidError) Unwrap() error        { return e.err }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Errorf(format, args...)}
}

// ValidateKey checks a cache key. The rules run in order and the first that
// fails is reported; the first six are ktstr's, the rest are kcache's (keys
// become file names under .locks and appear in JSON and terminals).
func ValidateKey(key string) error {
	bad := func(rule string) error { return &ValidationError{What: "cache key", Value: key, Rule: rule} }
	switch {
	case strings.TrimSpace(key) == "":
		return bad("empty or only whitespace")
	case strings.ContainsAny(key, `/\`):
		return bad(`contains a path separator ('/' or '\')`)
	case key == "." || key == "..":
		return bad("is a directory reference")
	case strings.Contains(key, ".."):
		return bad("contains '..' (path traversal)")
	case strings.ContainsRune(key, 0):
		return bad("contains a null byte")
	case strings.HasPrefix(key, ".tmp-"):
		return bad("starts with '.tmp-', which is reserved for staging directories")
	case strings.HasPrefix(key, "."):
		return bad("starts with '.', which is reserved for the cache's own files")
	case hasControl(key):
		return bad("contains a control character")
	case len(key) > MaxKeyLen:
		return bad(fmt.Sprintf("is %d bytes long; the limit is %d", len(key), MaxKeyLen))
	case !utf8.ValidString(key):
		return bad("is not valid UTF-8")
	}
	return nil
}

// reservedImageNames are file names an entry uses for itself in ktstr's
// layout, which export writes; an image by that name would overwrite them.
var reservedImageNames = map[string]bool{".": true, "metadata.json": true, "vmlinux": true}

// ValidateImageName checks a boot image's file name (bzImage, Image, ...).
func ValidateImageName(name string) error {
	bad := func(rule string) error { return &ValidationError{What: "image name", Value: name, Rule: rule} }
	switch {
	case name == "":
		return bad("empty")
	case strings.ContainsAny(name, `/\`):
		return bad(`contains a path separator ('/' or '\')`)
	case strings.Contains(name, ".."):
		return bad("contains '..' (path traversal)")
	case strings.ContainsRune(name, 0):
		return bad("contains a null byte")
	case reservedImageNames[name]:
		return bad("is reserved (., metadata.json and vmlinux name other files of an entry)")
	case hasControl(name):
		return bad("contains a control character")
	case len(name) > 255:
		return bad("is longer than 255 bytes")
	case !utf8.ValidString(name):
		return bad("is not valid UTF-8")
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// validHash8 reports whether s is a CRC-32 as ktstr writes it: 8 lowercase hex.
func validHash8(s string) bool {
	if len(s) != 8 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
