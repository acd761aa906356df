package kcache_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache"
)

// hostileKeys are keys every entry point must refuse, with a fragment of the
// rule the error has to name.
var hostileKeys = []struct{ key, rule string }{
	{"", "empty"},
	{"   ", "empty"},
	{"\t\n", "empty"},
	{"../escape", "path separator"},
	{"../../etc/passwd", "path separator"},
	{"a/b", "path separator"},
	{`a\b`, "path separator"},
	{"/abs", "path separator"},
	{"dir/", "path separator"},
	{".", "directory reference"},
	{"..", "directory reference"},
	{"foo..bar", "path traversal"},
	{"..hidden", "path traversal"},
	{"trailing..", "path traversal"},
	{"nul\x00byte", "null byte"},
	{"\x00", "null byte"},
	{".tmp-x", "reserved"},
	{".tmp-key-1234", "reserved"},
	{".hidden", "starts with '.'"},
	{".locks", "starts with '.'"},
	{".tmp", "starts with '.'"},
	{"ctl\x01char", "control character"},
	{"bell\a", "control character"},
	{"new\nline", "control character"},
	{"tab\tkey", "control character"},
	{"esc\x1b[31m", "control character"},
	{"del\x7f", "control character"},
	{"c1\u0085ctl", "control character"},
	{strings.Repeat("k", 201), "limit is 200"},
	{strings.Repeat("é", 101), "limit is 200"},
	{"bad\xffutf8", "UTF-8"},
	{"\xc3", "UTF-8"},
}

var hostileImageNames = []struct{ name, rule string }{
	{"", "empty"},
	{"a/b", "path separator"},
	{`a\b`, "path separator"},
	{"../bzImage", "path separator"},
	{"..", "path traversal"},
	{"x..y", "path traversal"},
	{"nul\x00", "null byte"},
	{".", "reserved"},
	{"metadata.json", "reserved"},
	{"vmlinux", "reserved"},
	{"ctl\x1f", "control character"},
	{strings.Repeat("i", 256), "255"},
	{"bad\xfe", "UTF-8"},
}

func TestValidateKeyRejectsHostileKeys(t *testing.T) {
	for _, tc := range hostileKeys {
		err := kcache.ValidateKey(tc.key)
		if err == nil {
			t.Errorf("ValidateKey(%q) accepted a hostile key", tc.key)
			continue
		}
		if !errors.Is(err, kcache.ErrInvalid) || !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("ValidateKey(%q) = %v; want ErrInvalid naming %q", tc.key, err, tc.rule)
		}
	}
}

func TestValidateKeyAcceptsOrdinaryKeys(t *testing.T) {
	for _, key := range []string{
		"6.14.2-tarball-x86_64-kcc0bd848c",
		"v6.15-rc3-git-a1b2c3d-x86_64-kcc0bd848c",
		"local-deadbee-x86_64",
		"6", " spaced key ", "key.with.dots", "ключ", strings.Repeat("k", 200),
	} {
		if err := kcache.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v; want nil", key, err)
		}
	}
}

func TestValidateImageName(t *testing.T) {
	for _, tc := range hostileImageNames {
		err := kcache.ValidateImageName(tc.name)
		if err == nil || !errors.Is(err, kcache.ErrInvalid) || !strings.Contains(err.Error(), tc.rule) || !strings.Contains(err.Error(), "image name") {
			t.Errorf("ValidateImageName(%q) = %v; want an image name error naming %q", tc.name, err, tc.rule)
		}
	}
	for _, name := range []string{"bzImage", "Image", "vmlinuz-6.1", "Image.gz"} {
		if err := kcache.ValidateImageName(name); err != nil {
			t.Errorf("ValidateImageName(%q) = %v", name, err)
		}
	}
}

// TestHostileInputLeavesRootUntouched drives every entry point that takes a
// key or image name with hostile values and checks the root was never created.
func TestHostileInputLeavesRootUntouched(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "cache")
	c := mustOpen(root, nil)
	img := writeFile(t, parent, "bzImage", []byte("image"))
	meta := kcache.Metadata{Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage"}
	for _, tc := range hostileKeys {
		calls := map[string]error{}
		_, calls["Store"] = c.Store(context.Background(), tc.key, kcache.Artifacts{Image: img}, meta)
		_, calls["Lookup"] = c.Lookup(context.Background(), tc.key)
		_, calls["OpenEntry"] = c.OpenEntry(context.Background(), tc.key)
		calls["Remove"] = c.Remove(context.Background(), tc.key, kcache.RemoveOptions{})
		calls["Pin"] = c.Pin(context.Background(), tc.key, "")
		_, calls["Unpin"] = c.Unpin(context.Background(), tc.key)
		_, calls["AcquireShared"] = c.AcquireShared(context.Background(), tc.key, kcache.LockOptions{})
		_, calls["AcquireExclusive"] = c.AcquireExclusive(context.Background(), tc.key, kcache.LockOptions{})
		_, calls["TryAcquireExclusive"] = c.AcquireExclusive(context.Background(), tc.key, kcache.LockOptions{NoWait: true})
		for name, err := range calls {
			if !errors.Is(err, kcache.ErrInvalid) || !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("%s(%q) = %v; want a validation error naming %q", name, tc.key, err, tc.rule)
			}
		}
	}
	for _, tc := range hostileImageNames {
		m := meta
		m.ImageName = tc.name
		_, err := c.Store(context.Background(), "good-key", kcache.Artifacts{Image: img}, m)
		if !errors.Is(err, kcache.ErrInvalid) || !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("Store with image name %q = %v; want a validation error naming %q", tc.name, err, tc.rule)
		}
	}
	if _, err := os.Lstat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("hostile input created the cache root %s (stat: %v)", root, err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("hostile input left files beside the root: %v", ents)
	}
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
