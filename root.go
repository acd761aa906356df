package kcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// RootEnv is the environment variable that names the cache root outright.
const RootEnv = "KCACHE_DIR"

// ErrRoot is matched by every root-resolution error.
var ErrRoot = errors.New("cannot resolve the cache root")

// ResolveRoot finds the cache root without touching the filesystem:
// KCACHE_DIR verbatim, else $XDG_CACHE_HOME/kcache, else $HOME/.cache/kcache.
// A variable set to the empty string counts as unset. HOME must be an
// absolute path other than "/"; each way it can be wrong has its own message
// naming the two variables that bypass it.
func ResolveRoot() (string, error) {
	if v, ok := os.LookupEnv(RootEnv); ok && v != "" {
		if !utf8.ValidString(v) {
			return "", fmt.Errorf("%w: %s is not valid UTF-8 (%d bytes: %q); set it to a UTF-8 path or unset it", ErrRoot, RootEnv, len(v), v)
		}
		return v, nil
	}
	if v := os.Getenv("XDG_CACHE_HOME"); v != "" && utf8.ValidString(v) {
		return filepath.Join(v, "kcache"), nil
	}
	home, err := validateHome()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "kcache"), nil
}

func validateHome() (string, error) {
	home, ok := os.LookupEnv("HOME")
	bypass := fmt.Sprintf("set %s to the cache directory, or XDG_CACHE_HOME to a directory kcache may use (the cache then lives in its kcache subdirectory)", RootEnv)
	switch {
	case !ok || !utf8.ValidString(home):
		return "", fmt.Errorf("%w: HOME is unset, so the default cache location $HOME/.cache/kcache is unknown; %s", ErrRoot, bypass)
	case home == "":
		return "", fmt.Errorf("%w: HOME is set to the empty string, so the default cache location $HOME/.cache/kcache is unknown; %s", ErrRoot, bypass)
	case home == "/":
		return "", fmt.Errorf("%w: HOME is `/`, which would put the cache at /.cache/kcache at the filesystem root; %s", ErrRoot, bypass)
	case !strings.HasPrefix(home, "/"):
		return "", fmt.Errorf("%w: HOME is %q, which is not an absolute path, so the cache would move with the working directory; %s", ErrRoot, home, bypass)
	}
	return home, nil
}
