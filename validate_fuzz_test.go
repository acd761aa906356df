package kcache_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/kcache/kcache"
)

// FuzzValidateKey: ValidateKey and ValidateImageName never panic, a rejected
// value is a *ValidationError matched by ErrInvalid, and an accepted key is
// safe as a file name under .locks and in a terminal: no '/', '\\', NUL or
// control character, no "..", no leading '.', at most MaxKeyLen bytes,
// valid UTF-8, not only whitespace. An accepted image name obeys the same
// rules except the leading '.', whitespace and the length (255).
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{
		"6.14.2-tarball-x86_64-kc1f2e3d4c", "k", "", " ", "\t", ".", "..", "a..b", "../x", `a\b`, "a/b",
		".hidden", ".tmp-x", "a\x00b", "a\nb", "a\u0085b", "\xff", "ключ", strings.Repeat("k", 200),
		strings.Repeat("k", 201), "bzImage", "metadata.json", "vmlinux", "Image.gz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(what string, err error, maxLen int, isKey bool) {
			if err != nil {
				var ve *kcache.ValidationError
				if !errors.As(err, &ve) || !errors.Is(err, kcache.ErrInvalid) {
					t.Fatalf("%s %q: error %T %v is not a ValidationError matching ErrInvalid", what, s, err, err)
				}
				return
			}
			switch {
			case strings.ContainsAny(s, "/\\\x00"):
				t.Fatalf("%s %q accepted with a separator or NUL", what, s)
			case strings.Contains(s, ".."):
				t.Fatalf("%s %q accepted with '..'", what, s)
			case isKey && strings.HasPrefix(s, "."):
				t.Fatalf("%s %q accepted with a leading '.'", what, s)
			case len(s) > maxLen:
				t.Fatalf("%s %q accepted at %d bytes", what, s, len(s))
			case !utf8.ValidString(s):
				t.Fatalf("%s %q accepted as invalid UTF-8", what, s)
			case s == "" || isKey && strings.TrimSpace(s) == "":
				t.Fatalf("%s %q accepted while empty or only whitespace", what, s)
			}
			for _, r := range s {
				if unicode.IsControl(r) {
					t.Fatalf("%s %q accepted with control character %U", what, s, r)
				}
			}
		}
		check("key", kcache.ValidateKey(s), kcache.MaxKeyLen, true)
		check("image name", kcache.ValidateImageName(s), 255, false)
	})
}
