package kcache_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kcache/kcache"
)

// setEnv sets or (with unset) removes variables for one test.
func setEnv(t *testing.T, vars map[string]*string) {
	t.Helper()
	for k, v := range vars {
		if v == nil {
			t.Setenv(k, "") // registers restoration
			os.Unsetenv(k)
		} else {
			t.Setenv(k, *v)
		}
	}
}

func ptr(s string) *string { return &s }

func TestResolveRoot(t *testing.T) {
	cases := []struct {
		name             string
		kcacheDir, xdg   *string
		home             *string
		want             string
		wantErr, mustNot []string
	}{
		{name: "KCACHE_DIR verbatim", kcacheDir: ptr("rel/dir//x"), home: nil, want: "rel/dir//x"},
		{name: "empty KCACHE_DIR falls through to XDG", kcacheDir: ptr(""), xdg: ptr("/xdg"), home: nil, want: "/xdg/kcache"},
		{name: "empty XDG falls through to HOME", kcacheDir: ptr(""), xdg: ptr(""), home: ptr("/home/u"), want: "/home/u/.cache/kcache"},
		{name: "HOME with spaces", home: ptr("/home/user with spaces"), want: "/home/user with spaces/.cache/kcache"},
		{name: "HOME unset", home: nil,
			wantErr: []string{"HOME is unset", "KCACHE_DIR", "XDG_CACHE_HOME"}, mustNot: []string{"empty string"}},
		{name: "HOME empty", home: ptr(""),
			wantErr: []string{"HOME is set to the empty string", "KCACHE_DIR", "XDG_CACHE_HOME"}, mustNot: []string{"unset"}},
		{name: "HOME is root", home: ptr("/"),
			wantErr: []string{"HOME is `/`", "/.cache/kcache", "KCACHE_DIR", "XDG_CACHE_HOME"}},
		{name: "HOME relative", home: ptr("tmp"),
			wantErr: []string{"not an absolute path", `"tmp"`, "KCACHE_DIR", "XDG_CACHE_HOME"}},
		{name: "HOME dot-relative", home: ptr("./relative"),
			wantErr: []string{"not an absolute path", `"./relative"`}},
		{name: "HOME dot", home: ptr("."), wantErr: []string{"not an absolute path", `"."`}},
		{name: "non-UTF-8 KCACHE_DIR", kcacheDir: ptr("/tmp/\xff"), home: ptr("/h"),
			wantErr: []string{"KCACHE_DIR", "not valid UTF-8", "unset it"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, map[string]*string{"KCACHE_DIR": tc.kcacheDir, "XDG_CACHE_HOME": tc.xdg, "HOME": tc.home})
			got, err := kcache.ResolveRoot()
			if tc.wantErr == nil {
				if err != nil || got != tc.want {
					t.Fatalf("ResolveRoot() = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, kcache.ErrRoot) {
				t.Fatalf("ResolveRoot() = %q, %v; want an ErrRoot error", got, err)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			for _, s := range tc.mustNot {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q must not contain %q", err, s)
				}
			}
		})
	}
}

// TestOpenCreatesNothing: opening a cache, listing it, and looking up,
// removing, pinning or unpinning a key it does not have create nothing.
func TestOpenCreatesNothing(t *testing.T) {
	root := t.TempDir() + "/missing/cache"
	c := mustOpen(root, nil)
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil || len(l.Entries) != 0 {
		t.Fatalf("List on a missing root = %+v, %v; want empty", l, err)
	}
	if _, err := c.Lookup(context.Background(), "some-key"); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Lookup on a missing root = %v; want ErrNotFound", err)
	}
	if err := c.Remove(context.Background(), "some-key", kcache.RemoveOptions{}); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Remove on a missing root = %v; want ErrNotFound", err)
	}
	if err := c.Pin(context.Background(), "some-key", ""); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Pin on a missing root = %v; want ErrNotFound", err)
	}
	if had, err := c.Unpin(context.Background(), "some-key"); had || err != nil {
		t.Fatalf("Unpin on a missing root = %v, %v; want false, nil", had, err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root %s exists after calls that found nothing", root)
	}
}
