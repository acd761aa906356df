package kcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/lock"
	"github.com/kcache/kcache/migrate"
)

// MigrateOptions tune Migrate.
type MigrateOptions struct {
	// From is the ktstr cache root; "" resolves ktstr's cascade
	// (migrate.ResolveKtstrRoot).
	From string
	// DryRun reads everything and reports what would happen; it writes
	// nothing (not even the kcache root) and removes nothing.
	DryRun bool
	// RemoveSource removes each legacy entry that is in kcache and verified
	// by digest (see Migrate).
	RemoveSource bool
	// LockTimeout bounds the wait for ktstr's shared entry lock; 0 means
	// DefaultSharedTimeout (10 s, what ktstr's readers wait).
	LockTimeout time.Duration
	// Progress, when not nil, is called after each legacy entry.
	Progress func(done, total int)
}

// MigrateReport is what Migrate did, entry by entry. Every list is present
// (empty, never null) in its JSON form.
type MigrateReport struct {
	From   string `json:"from"`
	DryRun bool   `json:"dry_run"`
	// Imported entries were stored (or, with DryRun, would be).
	Imported []MigratedEntry `json:"imported"`
	// SkippedExisting entries are in kcache already, imported from the same
	// files with the same metadata; nothing was written for them.
	SkippedExisting []string `json:"skipped_existing"`
	// Corrupt legacy entries, with ktstr's error_kind and reason; skipped.
	Corrupt []MigrateCorrupt `json:"corrupt"`
	// Busy entries: ktstr's lock (or kcache's own) stayed held for the
	// whole wait; they were not read.
	Busy []HeldLock `json:"busy"`
	// Conflicts: kcache has the key already from somewhere other than a
	// migration (e.g. kcache store); kcache's entry is left as is.
	Conflicts []MigrateProblem `json:"conflicts"`
	// Failed: kcache refused the entry (a key or metadata kcache does not
	// accept, e.g. a config_hash that is not a CRC-32); skipped.
	Failed []MigrateProblem `json:"failed"`
	// RemovedFromSource: legacy entries removed (RemoveSource): their
	// metadata.json, image and imported vmlinux are gone, so ktstr no
	// longer has the entry.
	RemovedFromSource []string `json:"removed_from_source"`
	// SourceDirsKept: entries of RemovedFromSource whose directory stayed
	// because it holds files that were not imported (Reason names them);
	// those were not touched.
	SourceDirsKept []MigrateProblem `json:"source_dirs_kept"`
	// NotRemoved: with RemoveSource, entries in kcache that were kept in the
	// source (in use, or the source no longer matches kcache).
	NotRemoved []MigrateProblem `json:"not_removed"`
	// BytesIn is the size of the legacy files read for imported entries;
	// BytesStored the size of their blobs in kcache (image and stripped
	// vmlinux; a blob shared with another entry counts for each).
	BytesIn     int64 `json:"bytes_in"`
	BytesStored int64 `json:"bytes_stored"`
}

// MigratedEntry is one imported entry.
type MigratedEntry struct {
	Key         string `json:"key"`
	BytesIn     int64  `json:"bytes_in"`
	BytesStored int64  `json:"bytes_stored"` // 0 with DryRun
	// Updated: kcache had an older import of this key, which was replaced.
	Updated bool `json:"updated"`
	// VmlinuxMissing: metadata.json says has_vmlinux but the entry has no
	// vmlinux file; the entry was imported without one.
	VmlinuxMissing bool `json:"vmlinux_missing"`
}

// MigrateCorrupt is a legacy entry that cannot be used.
type MigrateCorrupt struct {
	Key       string `json:"key"`
	ErrorKind string `json:"error_kind"`
	Reason    string `json:"reason"`
}

// MigrateProblem is an entry Migrate did not act on, and why.
type MigrateProblem struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Migrate imports a ktstr kernel cache (one directory per entry, see
// package migrate) into c. It only reads the source unless RemoveSource is
// set. Run it again at any time: unchanged entries are skipped without
// writing the index, changed ones are stored again, and an interrupted run
// simply continues.
//
// Locking: ktstr replaces an entry under its exclusive flock on
// <from>/.locks/<key>.lock. Migrate reads each entry under that lock held
// shared, waiting up to LockTimeout; an entry still locked then is reported
// busy and not read. ktstr creates lock files lazily and creating one would
// modify the source, so when an entry has no lock file Migrate reads it
// unlocked and checks afterwards that the lock file still does not exist (a
// ktstr writer creates it before touching the entry); if it appeared, the
// entry is read again under the lock.
//
// Every valid entry is stored under its key with ktstr's metadata
// (ktstr_kconfig_hash becomes kconfig_hash) and a record of the legacy files
// (index.Migrated: sha256 of the image and of the vmlinux as ktstr had it,
// before kcache strips it again). An entry is skipped when kcache's record
// came from a migration and has the same metadata, image digest and
// original vmlinux digest: deciding that hashes both legacy files (cost: one
// read of each, no write). A key that kcache holds from elsewhere is a
// conflict and left alone.
//
// RemoveSource removes an entry's files from the source only when kcache
// holds it (imported now or earlier) and, under ktstr's exclusive lock taken
// without waiting, the source's metadata equals the record's, the source
// image hashes to the record's image digest, the source vmlinux to the
// recorded original digest, and the kcache blobs re-hash to their names.
// Exactly the imported files are unlinked (metadata.json, the image, and
// the vmlinux when one was imported), each opened without following a
// symlink and checked to be the inode that was hashed. Anything else in
// the directory (notes, debug files, a vmlinux that was not imported, a
// subdirectory, a symlink) is left, and then so is the directory
// (SourceDirsKept says why); an empty directory is removed. A symlink in
// the entry (the directory, metadata.json, the image or an imported
// vmlinux) keeps the whole entry: neither it nor its target is removed.
//
// The report is never nil. When an error stops the migration midway, the
// report holds every entry handled before it (imported, and with
// RemoveSource removed from the source), so a caller can show what was
// done along with the error.
func (c *Cache) Migrate(ctx context.Context, opt MigrateOptions) (*MigrateReport, error) {
	r := &MigrateReport{From: opt.From, DryRun: opt.DryRun, Imported: []MigratedEntry{}, SkippedExisting: []string{},
		Corrupt: []MigrateCorrupt{}, Busy: []HeldLock{}, Conflicts: []MigrateProblem{}, Failed: []MigrateProblem{},
		RemovedFromSource: []string{}, SourceDirsKept: []MigrateProblem{}, NotRemoved: []MigrateProblem{}}
	if opt.From == "" {
		from, err := migrate.ResolveKtstrRoot()
		if err != nil {
			return r, err
		}
		opt.From, r.From = from, from
	}
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = DefaultSharedTimeout
	}
	if c.opt.ReadOnly && !opt.DryRun {
		return r, fmt.Errorf("migrate from %s: %w", opt.From, ErrReadOnly)
	}
	keys, err := migrate.ListKeys(opt.From)
	if err != nil {
		return r, err
	}
	for i, key := range keys {
		var out migrateOutcome
		for attempt := 0; attempt < 2; attempt++ {
			lockPath := migrate.LockPath(opt.From, key)
			_, statErr := os.Stat(lockPath)
			locked := statErr == nil
			if out, err = c.migrateEntry(ctx, opt, key, locked); err != nil {
				return r, err
			}
			if locked {
				break
			}
			if _, err := os.Stat(lockPath); err != nil {
				break // still no lock file: no ktstr writer touched the entry meanwhile
			}
		}
		out.apply(r)
		if opt.RemoveSource && !opt.DryRun && out.rec != nil {
			kept, err := c.removeLegacy(ctx, opt.From, key, out.rec)
			switch {
			case err != nil:
				r.NotRemoved = append(r.NotRemoved, MigrateProblem{Key: key, Reason: err.Error()})
			default:
				r.RemovedFromSource = append(r.RemovedFromSource, key)
				if kept != "" {
					r.SourceDirsKept = append(r.SourceDirsKept, MigrateProblem{Key: key, Reason: kept})
				}
			}
		}
		if opt.Progress != nil {
			opt.Progress(i+1, len(keys))
		}
		failpoint.Hit(failpoint.MigrateBetweenEntries)
	}
	return r, nil
}

// migrateOutcome is what happened to one entry; applied to the report only
// once it is final (an unlocked read may be redone under the lock).
type migrateOutcome struct {
	imported *MigratedEntry
	skipped  bool
	corrupt  *MigrateCorrupt
	busy     *HeldLock
	conflict *MigrateProblem
	failed   *MigrateProblem
	rec      *index.Record // kcache's record of the entry, for RemoveSource
	key      string
}

func (o migrateOutcome) apply(r *MigrateReport) {
	switch {
	case o.imported != nil:
		r.Imported = append(r.Imported, *o.imported)
		r.BytesIn += o.imported.BytesIn
		r.BytesStored += o.imported.BytesStored
	case o.skipped:
		r.SkippedExisting = append(r.SkippedExisting, o.key)
	case o.corrupt != nil:
		r.Corrupt = append(r.Corrupt, *o.corrupt)
	case o.busy != nil:
		r.Busy = append(r.Busy, *o.busy)
	case o.conflict != nil:
		r.Conflicts = append(r.Conflicts, *o.conflict)
	case o.failed != nil:
		r.Failed = append(r.Failed, *o.failed)
	}
}

// migrateEntry reads one legacy entry (under ktstr's shared lock when
// locked) and imports, skips or reports it. An error aborts the migration.
func (c *Cache) migrateEntry(ctx context.Context, opt MigrateOptions, key string, locked bool) (migrateOutcome, error) {
	out := migrateOutcome{key: key}
	if locked {
		lockPath := migrate.LockPath(opt.From, key)
		l, err := lock.Acquire(ctx, lockPath, lock.Shared, opt.LockTimeout, fmt.Sprintf("ktstr cache entry %q", key))
		var ce *lock.ContendedError
		if errors.As(err, &ce) {
			out.busy = &HeldLock{Key: key, Lockfile: lockPath, Holders: ce.Holders}
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("migrate %q: %w", key, err)
		}
		defer l.Release()
	}
	le := migrate.ReadEntry(opt.From, key)
	if le.Corrupt != nil {
		out.corrupt = &MigrateCorrupt{Key: key, ErrorKind: le.Corrupt.Kind, Reason: le.Corrupt.Reason}
		return out, nil
	}
	if err := ValidateKey(key); err != nil {
		out.failed = &MigrateProblem{Key: key, Reason: err.Error()}
		return out, nil
	}
	meta, err := legacyMetadata(le.Metadata).check(c.now())
	if err != nil {
		out.failed = &MigrateProblem{Key: key, Reason: err.Error()}
		return out, nil
	}
	src, err := statLegacy(&le)
	if err != nil {
		return out, fmt.Errorf("migrate %q: %w", key, err)
	}

	existing, err := c.Describe(ctx, key)
	var cerr *CorruptError
	switch {
	case errors.Is(err, ErrNotFound), errors.As(err, &cerr): // nothing usable there: import
	case err != nil:
		return out, fmt.Errorf("migrate %q: %w", key, err)
	case existing.Migrated == nil:
		out.conflict = &MigrateProblem{Key: key, Reason: "kcache already has this key, not imported from ktstr (stored directly into kcache); left as is"}
		return out, nil
	default:
		same, err := sameAsLegacy(ctx, &existing.Record, meta, &le, src)
		if err != nil {
			return out, fmt.Errorf("migrate %q: %w", key, err)
		}
		if same {
			out.skipped, out.rec = true, &existing.Record
			return out, nil
		}
	}

	imp := &MigratedEntry{Key: key, BytesIn: src.imageSize + src.vmlinuxSize, Updated: existing != nil, VmlinuxMissing: le.VmlinuxMissing}
	if le.VmlinuxMissing {
		c.warnf("ktstr cache entry %q: metadata.json says has_vmlinux but %s/vmlinux is missing; importing it without a vmlinux", key, le.Dir)
	}
	if opt.DryRun {
		out.imported = imp
		return out, nil
	}
	mig := &index.Migrated{From: opt.From, LegacyStripped: le.Metadata.VmlinuxStripped, MigratedAt: c.now().UTC().Format(time.RFC3339)}
	if le.VmlinuxPath != "" {
		if mig.VmlinuxSHA256, mig.VmlinuxSize, err = sha256File(ctx, le.VmlinuxPath); err != nil {
			return out, fmt.Errorf("migrate %q: %w", key, err)
		}
	}
	e, err := c.storeMigrated(ctx, key, le, meta, mig)
	switch {
	case errors.Is(err, ErrInvalid):
		out.failed = &MigrateProblem{Key: key, Reason: err.Error()}
		return out, nil
	case errors.Is(err, ErrInUse):
		var ce *lock.ContendedError
		errors.As(err, &ce)
		h := &HeldLock{Key: key, Lockfile: c.LockPath(key)}
		if ce != nil {
			h.Holders = ce.Holders
		}
		out.busy = h
		return out, nil
	case err != nil:
		return out, fmt.Errorf("migrate %q: %w", key, err)
	}
	imp.BytesStored = e.Image.Size
	if e.Vmlinux != nil {
		imp.BytesStored += e.Vmlinux.Size
	}
	out.imported, out.rec = imp, &e.Record
	return out, nil
}

// storeMigrated stores a legacy entry with its index.Migrated record. The
// manifest must carry the image's sha256, which Store computes only while
// copying, so the image is hashed first (one more read) and the result
// checked against the blob Store made.
func (c *Cache) storeMigrated(ctx context.Context, key string, le migrate.LegacyEntry, meta Metadata, mig *index.Migrated) (*Entry, error) {
	d, _, err := sha256File(ctx, le.ImagePath)
	if err != nil {
		return nil, err
	}
	mig.ImageSHA256 = d
	e, err := c.store(ctx, key, Artifacts{Image: le.ImagePath, Vmlinux: le.VmlinuxPath}, meta, mig)
	if err != nil {
		return nil, err
	}
	if e.Image.Digest != d {
		return nil, fmt.Errorf("the image %s changed while it was imported (sha256 %s, then %s); migrating again imports it", le.ImagePath, d, e.Image.Digest)
	}
	return e, nil
}

// legacySizes are the sizes of a legacy entry's files.
type legacySizes struct{ imageSize, vmlinuxSize int64 }

func statLegacy(le *migrate.LegacyEntry) (legacySizes, error) {
	var s legacySizes
	fi, err := os.Stat(le.ImagePath)
	if err != nil {
		return s, err
	}
	s.imageSize = fi.Size()
	if le.VmlinuxPath != "" {
		if fi, err = os.Stat(le.VmlinuxPath); err != nil {
			return s, err
		}
		s.vmlinuxSize = fi.Size()
	}
	return s, nil
}

// legacyMetadata maps metadata.json to Store's metadata. has_vmlinux and
// vmlinux_stripped are recomputed by Store from the files.
func legacyMetadata(m *migrate.Metadata) Metadata {
	return Metadata{
		Version: m.Version,
		Source: Source{Type: m.Source.Type, GitHash: m.Source.GitHash, Ref: m.Source.Ref,
			SourceTreePath: m.Source.SourceTreePath},
		Arch: m.Arch, ImageName: m.ImageName, ConfigHash: m.ConfigHash, BuiltAt: m.BuiltAt,
		KconfigHash: m.KtstrKconfigHash, SourceVmlinuxSize: m.SourceVmlinuxSize,
		SourceVmlinuxMtimeSecs: m.SourceVmlinuxMtimeSecs,
	}
}

// recordMetadata is the part of a record that legacyMetadata fills.
func recordMetadata(r *index.Record) Metadata {
	return Metadata{Version: r.Version, Source: r.Source, Arch: r.Arch, ImageName: r.ImageName,
		ConfigHash: r.ConfigHash, BuiltAt: r.BuiltAt, KconfigHash: r.KconfigHash,
		SourceVmlinuxSize: r.SourceVmlinuxSize, SourceVmlinuxMtimeSecs: r.SourceVmlinuxMtimeSecs}
}

// sameAsLegacy reports whether rec was imported from exactly this legacy
// entry: same metadata (checked first, free), same sizes, then the same
// image and original vmlinux sha256 (one read of each file).
func sameAsLegacy(ctx context.Context, rec *index.Record, meta Metadata, le *migrate.LegacyEntry, src legacySizes) (bool, error) {
	mig := rec.Migrated
	if !legacyMetaMatches(rec, meta, le.Metadata.VmlinuxStripped) || rec.HasVmlinux != (le.VmlinuxPath != "") ||
		rec.Image.Size != src.imageSize || mig.VmlinuxSize != src.vmlinuxSize {
		return false, nil
	}
	d, _, err := sha256File(ctx, le.ImagePath)
	if err != nil || d != rec.Image.Digest {
		return false, err
	}
	if le.VmlinuxPath != "" {
		d, _, err := sha256File(ctx, le.VmlinuxPath)
		if err != nil || d != mig.VmlinuxSHA256 {
			return false, err
		}
	}
	return true, nil
}

// legacyMetaMatches reports whether rec was imported by a migration from a
// legacy entry with this metadata (meta from legacyMetadata, stripped its
// vmlinux_stripped).
func legacyMetaMatches(rec *index.Record, meta Metadata, stripped bool) bool {
	mig := rec.Migrated
	meta.ConfigHZ = nil
	return mig != nil && reflect.DeepEqual(recordMetadata(rec), meta) && mig.LegacyStripped == stripped &&
		mig.ImageSHA256 == rec.Image.Digest
}

func sha256File(ctx context.Context, path string) (digest string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
