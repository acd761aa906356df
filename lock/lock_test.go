package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExclusiveContendsWithinOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "k.lock")
	held, err := Acquire(context.Background(), path, Exclusive, 0, `cache entry "k"`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(context.Background(), path, Shared, 0, `cache entry "k"`)
	var ce *ContendedError
	if !errors.As(err, &ce) || !errors.Is(err, ErrContended) {
		t.Fatalf("second acquisition = %v; want ContendedError", err)
	}
	msg := err.Error()
	for _, want := range []string{`cache entry "k"`, "lockfile " + path, "holders:", fmt.Sprintf("pid=%d mode=exclusive", os.Getpid()), "LOCK_SH"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(context.Background(), path, Exclusive, 0, "k")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again.Release()
}

func TestSharedLocksCoexistAndTimeoutNamesHolders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	a, err := Acquire(context.Background(), path, Shared, 0, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := Acquire(context.Background(), path, Shared, 0, "k")
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	defer b.Release()
	hs, err := Holders(path)
	if err != nil || len(hs) != 1 || hs[0].PID != os.Getpid() || hs[0].Mode != "shared" {
		t.Fatalf("Holders = %+v, %v; want this process once, shared", hs, err)
	}
	_, err = Acquire(context.Background(), path, Exclusive, 250*time.Millisecond, `cache entry "k"`)
	var ce *ContendedError
	if !errors.As(err, &ce) || ce.Waited == 0 || !strings.Contains(err.Error(), "timed out after") || !strings.Contains(err.Error(), "LOCK_EX") {
		t.Fatalf("timed wait = %v; want a timeout naming LOCK_EX", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "stop them") {
		t.Errorf("timed wait = %v; want the lock file and what to do", err)
	}
}

func TestAcquireHonoursContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	held, _ := Acquire(context.Background(), path, Exclusive, 0, "k")
	defer held.Release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Acquire(ctx, path, Exclusive, time.Hour, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context = %v", err)
	}
}

func TestHoldersOfUnlockedAndMissingFiles(t *testing.T) {
	dir := t.TempDir()
	if hs, err := Holders(filepath.Join(dir, "missing")); err != nil || hs != nil {
		t.Fatalf("Holders(missing) = %v, %v", hs, err)
	}
	p := filepath.Join(dir, "free")
	os.WriteFile(p, nil, 0o644)
	if hs, err := Holders(p); err != nil || len(hs) != 0 {
		t.Fatalf("Holders(unlocked) = %v, %v", hs, err)
	}
	if got := FormatHolders(nil); got != "  <none recorded>" {
		t.Fatalf("FormatHolders(nil) = %q", got)
	}
}

func TestAcquireFreshRetriesAReplacedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.lock")
	l, err := AcquireFresh(path, "staging")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if _, err := AcquireFresh(path, "staging"); !errors.Is(err, ErrContended) {
		t.Fatalf("AcquireFresh of a held lock = %v", err)
	}
}

func TestMountinfoParsing(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/with\040space`: "/mnt/with space",
		`/tab\011x`:          "/tab\tx",
		`/back\134slash`:     `/back\slash`,
		`/not\08escape`:      `/not\08escape`,
		`/big\777`:           `/big\777`,
		`/end\04`:            `/end\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q; want %q", in, got, want)
		}
	}
	for _, c := range []struct {
		mp, p string
		want  bool
	}{{"/", "/x", true}, {"/tmp", "/tmp/foo", true}, {"/tmp/foo", "/tmp/foobar", false}, {"/tmp", "/tmp", true}} {
		if covers(c.mp, c.p) != c.want {
			t.Errorf("covers(%q, %q) != %v", c.mp, c.p, c.want)
		}
	}
}

func TestLocalFSCheckAcceptsTmp(t *testing.T) {
	if err := CheckLocalFS(filepath.Join(t.TempDir(), "a", "b", "c.lock")); err != nil {
		t.Fatalf("CheckLocalFS on a local temp dir: %v", err)
	}
}
