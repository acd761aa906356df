// Package ktstrfixture writes a ktstr kernel cache for migrate's tests: valid
// entries of every source type, with and without a vmlinux (raw and
// stripped) and with and without optional fields, one entry of each
// corruption class, ktstr's .locks directory and a stale staging directory.
// Entries are written by internal/legacy (ktstr's layout and metadata.json
// format: 2-space pretty-printing, fixed field order, explicit nulls).
package ktstrfixture

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kcache/kcache/internal/legacy"
	"github.com/kcache/kcache/migrate"
	"github.com/kcache/kcache/strip"
)

// Entry is a valid entry as written.
type Entry struct {
	Key           string
	Meta          legacy.Metadata // has_vmlinux and vmlinux_stripped as in the file
	ImageSHA256   string
	ImageSize     int64
	VmlinuxSHA256 string // "" without a vmlinux
	VmlinuxSize   int64
}

// Fixture is a written ktstr cache.
type Fixture struct {
	Root    string
	Valid   map[string]Entry
	Corrupt map[string]string // key -> error_kind
	work    string
	inputs  map[string]string // vmlinux variant -> path
}

func sp(s string) *string { return &s }

// Build writes the cache at root from the fixtures in testdata (the
// module's testdata directory), using work for input files.
func Build(root, work, testdata string) (*Fixture, error) {
	f := &Fixture{Root: root, Valid: map[string]Entry{}, Corrupt: map[string]string{}, work: work, inputs: map[string]string{}}
	f.inputs["elf"] = filepath.Join(testdata, "elf", "vmlinux-x86_64")
	f.inputs["sample"] = filepath.Join(testdata, "sample", "vmlinux")
	stripped := filepath.Join(work, "vmlinux-stripped")
	if err := stripTo(f.inputs["elf"], stripped); err != nil {
		return nil, err
	}
	f.inputs["stripped"] = stripped
	image, err := os.ReadFile(filepath.Join(testdata, "sample", "bzImage"))
	if err != nil {
		return nil, err
	}
	for i := range 24 {
		key, meta := entryMeta(i)
		vm := []string{"", "elf", "sample", "stripped"}[(i/3)%4]
		if _, err := f.Put(key, append(bytes.Clone(image), key...), vm, meta); err != nil {
			return nil, err
		}
	}
	// An entry without a lock file (copied from elsewhere): read unlocked.
	k0, _ := entryMeta(0)
	if err := os.Remove(migrate.LockPath(root, k0)); err != nil {
		return nil, err
	}
	// Optional keys absent from the file altogether (not null).
	key := "local-absent-optionals-x86_64"
	if _, err := f.Put(key, append(bytes.Clone(image), key...), "", legacy.Metadata{
		Source: legacy.Source{Type: "local"}, Arch: "x86_64", ImageName: "bzImage", BuiltAt: "2025-12-31T23:59:59Z"}); err != nil {
		return nil, err
	}
	minimal := `{"source":{"type":"local"},"arch":"x86_64","image_name":"bzImage","built_at":"2025-12-31T23:59:59Z","has_vmlinux":false,"vmlinux_stripped":false,"future_field":[1,2]}`
	if err := os.WriteFile(filepath.Join(root, key, "metadata.json"), []byte(minimal), 0o644); err != nil {
		return nil, err
	}

	// One entry of each corruption class.
	corrupt := map[string]struct{ kind, text string }{
		"corrupt-schema-drift": {"schema_drift", `{"source":{"type":"tarball"},"arch":"x86_64","image_name":"bzImage","built_at":"2026-01-01T00:00:00Z","vmlinux_stripped":false}`},
		"corrupt-malformed":    {"malformed", "not json"},
		"corrupt-truncated":    {"truncated", `{"source":`},
		"corrupt-unknown-src":  {"schema_drift", `{"source":{"type":"svn"},"arch":"x86_64","image_name":"bzImage","built_at":"2026-01-01T00:00:00Z","has_vmlinux":false,"vmlinux_stripped":false}`},
	}
	for key, c := range corrupt {
		if _, err := f.Put(key, image, "", legacy.Metadata{Source: legacy.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage", BuiltAt: "2026-01-01T00:00:00Z"}); err != nil {
			return nil, err
		}
		delete(f.Valid, key)
		if err := os.WriteFile(filepath.Join(root, key, "metadata.json"), []byte(c.text), 0o644); err != nil {
			return nil, err
		}
		f.Corrupt[key] = c.kind
	}
	if _, err := f.Put("corrupt-image-missing", image, "", legacy.Metadata{Source: legacy.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage", BuiltAt: "2026-01-01T00:00:00Z"}); err != nil {
		return nil, err
	}
	delete(f.Valid, "corrupt-image-missing")
	f.Corrupt["corrupt-image-missing"] = "image_missing"
	if err := os.Remove(filepath.Join(root, "corrupt-image-missing", "bzImage")); err != nil {
		return nil, err
	}
	f.Corrupt["corrupt-missing"] = "missing"
	if err := os.Mkdir(filepath.Join(root, "corrupt-missing"), 0o755); err != nil {
		return nil, err
	}
	f.Corrupt["corrupt-unreadable"] = "unreadable"
	if err := os.MkdirAll(filepath.Join(root, "corrupt-unreadable", "metadata.json"), 0o755); err != nil {
		return nil, err
	}
	// Bookkeeping that must be ignored: a stale staging dir of a dead
	// writer (a full entry inside), another dot dir, a stray file.
	// (Written last: legacy.Store sweeps staging dirs of dead writers.)
	stale := filepath.Join(root, ".tmp-x-99999")
	if err := os.Mkdir(stale, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stale, "bzImage"), image, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stale, "metadata.json"), []byte(minimal), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(root, ".hidden", "x"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "stray-file"), []byte("x"), 0o644); err != nil {
		return nil, err
	}
	return f, nil
}

// entryMeta returns the key and metadata of valid entry i: source type
// rotates tarball, git, local; every other block of 12 has its optional
// fields null; every fifth is aarch64.
func entryMeta(i int) (string, legacy.Metadata) {
	arch, image := "x86_64", "bzImage"
	if i%5 == 4 {
		arch, image = "aarch64", "Image"
	}
	m := legacy.Metadata{Arch: arch, ImageName: image, BuiltAt: fmt.Sprintf("2026-04-%02dT10:%02d:00Z", 1+i%28, i)}
	withOptional := (i/12)%2 == 0
	if withOptional {
		m.ConfigHash, m.KtstrKconfigHash = sp(fmt.Sprintf("%08x", 0x1f2e3d00+i)), sp("c0bd848c")
	}
	var key string
	hash := fmt.Sprintf("%07x", 0xabc0000+i)
	switch i % 3 {
	case 0:
		v := fmt.Sprintf("6.14.%d", i)
		m.Source = legacy.Source{Type: "tarball"}
		m.Version = sp(v)
		key = fmt.Sprintf("%s-tarball-%s-kcc0bd848c", v, arch)
	case 1:
		ref := fmt.Sprintf("v6.%d", i)
		m.Source = legacy.Source{Type: "git", Ref: sp(ref)}
		if withOptional {
			m.Source.GitHash = sp(hash)
		}
		key = fmt.Sprintf("%s-git-%s-%s-kcc0bd848c", ref, hash, arch)
	default:
		m.Source = legacy.Source{Type: "local", GitHash: sp(hash)}
		if withOptional {
			m.Source.SourceTreePath = sp(fmt.Sprintf("/home/u/linux-%d", i))
			size, mtime := uint64(587788136+i), int64(1751464200+i)
			m.SourceVmlinuxSize, m.SourceVmlinuxMtimeSecs = &size, &mtime
		}
		key = fmt.Sprintf("local-%s-%s-kcc0bd848c", hash, arch)
	}
	return key, m
}

// Put writes (or replaces, as ktstr does) entry key with the given image
// bytes and vmlinux variant ("", "elf", "sample" or "stripped") and records
// it as valid. It returns the entry as written.
func (f *Fixture) Put(key string, image []byte, vmlinux string, meta legacy.Metadata) (Entry, error) {
	imgPath := filepath.Join(f.work, "image-"+hex.EncodeToString([]byte(key)))
	if err := os.WriteFile(imgPath, image, 0o644); err != nil {
		return Entry{}, err
	}
	defer os.Remove(imgPath)
	vmPath := f.inputs[vmlinux]
	if _, err := legacy.Store(f.Root, key, imgPath, vmPath, meta); err != nil {
		return Entry{}, err
	}
	meta.HasVmlinux, meta.VmlinuxStripped = vmPath != "", vmlinux == "stripped"
	if meta.VmlinuxStripped { // legacy.Store writes vmlinux_stripped=false
		if err := f.rewriteMeta(key, meta); err != nil {
			return Entry{}, err
		}
	}
	e := Entry{Key: key, Meta: meta, ImageSHA256: sum(image), ImageSize: int64(len(image))}
	if vmPath != "" {
		data, err := os.ReadFile(vmPath)
		if err != nil {
			return Entry{}, err
		}
		e.VmlinuxSHA256, e.VmlinuxSize = sum(data), int64(len(data))
	}
	f.Valid[key] = e
	return e, nil
}

// rewriteMeta rewrites metadata.json in place the way ktstr formats it.
func (f *Fixture) rewriteMeta(key string, meta legacy.Metadata) error {
	data, err := legacy.MarshalMetadata(meta)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(f.Root, key, "metadata.json"), data, 0o644)
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func stripTo(in, out string) error {
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := strip.Strip(src, fi.Size(), &buf); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o755)
}
