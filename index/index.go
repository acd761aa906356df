package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/kcache/kcache/internal/fsync"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the index layout this package writes. Version history:
//
//	1  buckets meta, entries, by_time, blobs, pins; stats created lazily
//	2  the stats bucket exists from creation on (added by package migrate's
//	   step 1→2); records and blob refs are unchanged: their later fields
//	   (BlobRef.Dying, Record.Corrupt) are omitempty, so v1 values decode;
//	   so is BlobRef.Ctime, added later within schema 2 (absent = unknown)
const SchemaVersion = 2

// MinReadSchema is the oldest schema that a read-only open with
// Options.ReadOld reads as it is, without upgrading: every bucket a reader
// uses has the same shape since then.
const MinReadSchema = 1

var (
	bucketMeta    = []byte("meta")
	bucketEntries = []byte("entries")
	bucketByTime  = []byte("by_time")
	bucketBlobs   = []byte("blobs")
	bucketPins    = []byte("pins")
	bucketStats   = []byte("stats")

	keySchema  = []byte("schema_version")
	keyCreated = []byte("created_at")
	keyKconfig = []byte("kconfig_hash")
)

// allBuckets are the top-level buckets of SchemaVersion, each with the
// schema version that introduced it.
var allBuckets = []struct {
	name  []byte
	since uint32
}{
	{bucketMeta, 1}, {bucketEntries, 1}, {bucketByTime, 1}, {bucketBlobs, 1}, {bucketPins, 1},
	{bucketStats, 2},
}

var (
	// ErrBusy means the index file stayed locked by another process for the
	// whole timeout.
	ErrBusy = errors.New("index is locked by another process")
	// ErrCorrupt means the index file cannot be read safely.
	ErrCorrupt = errors.New("index corrupt")
	// ErrSchemaTooNew means the file was written by a newer kcache.
	ErrSchemaTooNew = errors.New("index schema is newer than this kcache")
	// ErrSchemaOld is matched by *SchemaOldError: the file has an older
	// schema that package migrate upgrades.
	ErrSchemaOld = errors.New("index schema is older than this kcache")
	// ErrNotFound means there is no record under the key.
	ErrNotFound = errors.New("not found")
	// ErrNoIndex means a read-only open found no index file: an empty cache.
	ErrNoIndex = errors.New("no index file")
	// ErrBlobDying means a blob was released by a removal that has not
	// unlinked its file yet; the caller waits and writes the blob again.
	ErrBlobDying = errors.New("blob is being removed")
	// ErrBlobVanished means Put found no file for a blob the index does
	// not reference yet: a concurrent removal unlinked it after the writer
	// found it present. It also matches os.ErrNotExist.
	ErrBlobVanished = errors.New("blob file vanished")
)

// SchemaOldError is an index file with an older schema than SchemaVersion.
// Open returns it instead of a DB; package migrate upgrades the file.
type SchemaOldError struct {
	Path    string
	Version uint32 // the file's schema
}

func (e *SchemaOldError) Error() string {
	return fmt.Sprintf("index %s has schema %d, this kcache uses %d: it needs an upgrade", e.Path, e.Version, SchemaVersion)
}

// Is makes errors.Is(err, ErrSchemaOld) true.
func (e *SchemaOldError) Is(target error) bool { return target == ErrSchemaOld }

// DyingAbandonAfter is how long a released blob may stay dying before Put
// presumes its remover died and takes the blob over. A remover unlinks right
// after its commit, so this is orders of magnitude longer than it needs.
var DyingAbandonAfter = 30 * time.Second

// Options control Open.
type Options struct {
	ReadOnly bool
	// ReadOld lets a read-only open accept a file of an older schema, down
	// to MinReadSchema, as it is. Without it (and always for a read-write
	// open) an older file is a *SchemaOldError.
	ReadOld bool
	// Timeout bounds the wait for another process's lock on the file. Zero
	// means DefaultTimeout; bbolt's own "0 = forever" is never used.
	Timeout time.Duration
	// loadFreelist makes a read-only open read the freelist (OpenForStats).
	loadFreelist bool
}

// DefaultTimeout is the wait for the index lock when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// DB is an open index file.
type DB struct {
	bolt *bolt.DB
	path string
	// file is bbolt's own descriptor of the file it mapped. Size checks
	// fstat it, never the path: doctor may rename another file over the
	// path while this one is open, and the path's size says nothing about
	// the mapping (a false ErrCorrupt).
	file *os.File
}

// Path returns the index file's path.
func (d *DB) Path() string { return d.path }

// Open opens the index at path. A read-write open of a missing file creates
// it; a read-only open of a missing file returns ErrNoIndex.
//
// doctor replaces the file (rebuild, compaction) while holding bbolt's lock
// on the old one; a process that was waiting for that lock then holds the
// replaced file. Open notices (the path names another inode than before the
// wait) and opens again, so nothing is ever written to a file that is no
// longer the index.
//
// Each replacement means a doctor finished one rebuild, so Open keeps trying
// for as long as it may wait for the lock at all (opt.Timeout): a writer
// beside doctors rebuilding back to back must get its turn, not give up
// after a fixed number of replacements.
func Open(path string, opt Options) (*DB, error) {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	for try := 0; try < 5 || time.Now().Before(deadline); try++ {
		before, _ := os.Stat(path)
		db, err := openOnce(path, opt)
		if err != nil {
			return nil, err
		}
		after, err := os.Stat(path)
		if before == nil || err == nil && os.SameFile(before, after) {
			return db, nil
		}
		_ = db.Close()
	}
	return nil, fmt.Errorf("open %s: %w (the file was replaced again and again while waiting for it)", path, ErrBusy)
}

func openOnce(path string, opt Options) (db *DB, err error) {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	// Lstat: bbolt opens by path with O_CREATE, so a symlink here (a
	// dangling one too) would make it create or write an index elsewhere.
	fi, statErr := os.Lstat(path)
	if statErr == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("open index %s: it is a symlink, which kcache never creates; refusing to follow it", path)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if opt.ReadOnly {
			return nil, ErrNoIndex
		}
		if err := create(path); err != nil {
			return nil, err
		}
	}
	// A read-write open (and a read-only one that loads the freelist) reads
	// pages beyond the meta pages inside bolt.Open: refuse a truncated file
	// before it is mapped, and turn any other fault into ErrCorrupt. A plain
	// read-only open (every lookup) reads only the meta pages there, and
	// every transaction checks the size itself (checkSize), so it skips this
	// extra open and two reads.
	if !opt.ReadOnly || opt.loadFreelist {
		if err := checkFileSize(path); err != nil {
			return nil, err
		}
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(path, &err)
	b, file, err := openBolt(path, &bolt.Options{
		ReadOnly:        opt.ReadOnly,
		Timeout:         opt.Timeout,
		FreelistType:    bolt.FreelistMapType,
		PreLoadFreelist: opt.loadFreelist,
	})
	if err != nil {
		return nil, openError(path, opt.Timeout, err)
	}
	db = &DB{bolt: b, path: path, file: file}
	if err := db.View(func(tx *Tx) error { return tx.checkSchema(opt) }); err != nil {
		_ = b.Close()
		var old *SchemaOldError
		if errors.As(err, &old) {
			old.Path = path
		}
		if errors.Is(err, ErrSchemaTooNew) {
			err = fmt.Errorf("open %s: %w", path, err)
		}
		return nil, err
	}
	return db, nil
}

// openBolt is bolt.Open that also returns the *os.File bbolt opened (and
// owns: it is closed with the DB), so that size checks look at the file that
// is mapped rather than at whatever the path names by then.
func openBolt(path string, o *bolt.Options) (*bolt.DB, *os.File, error) {
	var file *os.File
	open := o.OpenFile
	if open == nil {
		open = os.OpenFile
	}
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := open(name, flag, perm)
		file = f
		return f, err
	}
	b, err := bolt.Open(path, 0o644, o)
	if err != nil {
		return nil, nil, err
	}
	return b, file, nil
}

// openError classifies an error of bolt.Open: ErrBusy after waiting timeout
// for the lock, ErrCorrupt for anything about the file's content, else the
// operating system's error.
func openError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open %s: %w (waited %s)", path, ErrBusy, timeout)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch):
		return fmt.Errorf("open %s: %w: %v", path, ErrCorrupt, err)
	case !isOSError(err):
		// bbolt's own complaints without a sentinel ("file size too
		// small", a bad page size) are about the file's content.
		return fmt.Errorf("open %s: %w: %v", path, ErrCorrupt, err)
	}
	return fmt.Errorf("open index %s: %w", path, err)
}

// create makes a new, fully initialised index file and links it into place,
// so no reader ever sees a half-initialised file (bbolt's first write is its
// one unsafe window). Losing a race to another creator is fine.
func create(path string) error {
	tmp := fmt.Sprintf("%s.new-%d-%d", path, os.Getpid(), time.Now().UnixNano())
	defer os.Remove(tmp)
	b, err := bolt.Open(tmp, 0o644, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("create index %s: %w", tmp, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b.name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if err := m.Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion)); err != nil {
			return err
		}
		return m.Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339)))
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("initialise index %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("install index %s: %w", path, err)
	}
	return fsync.Dir(filepath.Dir(path))
}

// Close closes the file and releases bbolt's lock on it.
func (d *DB) Close() error {
	if err := d.bolt.Close(); err != nil {
		return fmt.Errorf("close index %s: %w", d.path, err)
	}
	return nil
}

// View runs fn in a read-only transaction.
func (d *DB) View(fn func(*Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(d.path, &err)
	return d.bolt.View(func(btx *bolt.Tx) error {
		if err := checkSize(d.path, d.file, btx); err != nil {
			return err
		}
		return fn(&Tx{tx: btx})
	})
}

// Update runs fn in a read-write transaction that commits if fn returns nil.
func (d *DB) Update(fn func(*Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(d.path, &err)
	return d.bolt.Update(func(btx *bolt.Tx) error {
		if err := checkSize(d.path, d.file, btx); err != nil {
			return err
		}
		return fn(&Tx{tx: btx})
	})
}

// checkSize refuses a file shorter than its meta page says: reading past the
// end of the mapping would kill the process with SIGBUS. It fstats f, the
// descriptor of the mapped file (path only names it in errors): a rebuild or
// compaction may have renamed a new, smaller file over the path meanwhile,
// which says nothing about this mapping.
func checkSize(path string, f *os.File, btx *bolt.Tx) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat index %s: %w", path, err)
	}
	if fi.Size() < btx.Size() {
		return fmt.Errorf("%w: %s is %d bytes but its header says %d (truncated)", ErrCorrupt, path, fi.Size(), btx.Size())
	}
	return nil
}

// checkFileSize is checkSize before bbolt opens the file: it reads both meta
// pages the way bbolt does (the valid one with the higher txid wins; valid
// means bbolt's magic, format version 2 and FNV-64a checksum of the first 56
// bytes) and refuses a file shorter than that meta's high-water mark. bbolt
// reads the freelist page inside a read-write Open, so such a file would
// otherwise kill the process with SIGBUS there. Anything it cannot judge (no
// valid meta, an unreadable file) is left to bolt.Open to report.
func checkFileSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	type meta struct{ pageSize, pgid, txid uint64 }
	read := func(off int64) (meta, bool) {
		// Page header (16 bytes), then magic, version, pageSize, flags
		// (uint32), root bucket (16 bytes), freelist, pgid, txid, checksum
		// (uint64), in the machine's byte order.
		var b [16 + 64]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return meta{}, false
		}
		m := b[16:]
		ne := binary.NativeEndian
		h := fnv.New64a()
		h.Write(m[:56])
		if ne.Uint32(m[0:]) != 0xED0CDAED || ne.Uint32(m[4:]) != 2 || ne.Uint64(m[56:]) != h.Sum64() {
			return meta{}, false
		}
		return meta{uint64(ne.Uint32(m[8:])), ne.Uint64(m[40:]), ne.Uint64(m[48:])}, true
	}
	m0, ok0 := read(0)
	ps := int64(os.Getpagesize())
	if ok0 {
		ps = int64(m0.pageSize)
	}
	m1, ok1 := read(ps)
	m, ok := m0, ok0
	if ok1 && (!ok0 || m1.txid > m0.txid) {
		m, ok = m1, true
	}
	if ok && m.pgid > uint64(fi.Size())/m.pageSize {
		return fmt.Errorf("open %s: %w: the file is %d bytes but its header says %d (truncated)", path, ErrCorrupt, fi.Size(), m.pgid*m.pageSize)
	}
	return nil
}

// recoverCorrupt turns a panic from bbolt or a memory fault while walking the
// mapping into ErrCorrupt.
func recoverCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: reading %s failed: %v", ErrCorrupt, path, r)
	}
}

// Tx is a transaction on the index.
type Tx struct {
	tx *bolt.Tx
}

func (t *Tx) bucket(name []byte) (*bolt.Bucket, error) {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("%w: bucket %q is missing", ErrCorrupt, name)
	}
	return b, nil
}

func (t *Tx) checkSchema(opt Options) error {
	n, err := schemaOf(t.tx)
	if err != nil {
		return err
	}
	switch {
	case n > SchemaVersion:
		return schemaTooNew(n)
	case n < SchemaVersion && !(opt.ReadOnly && opt.ReadOld && n >= MinReadSchema):
		return &SchemaOldError{Version: n}
	}
	return checkBuckets(t.tx, n)
}

func schemaTooNew(n uint32) error {
	return fmt.Errorf("%w: the index file has schema %d, this kcache reads up to schema %d; upgrade kcache", ErrSchemaTooNew, n, SchemaVersion)
}

// schemaOf reads the schema version of any index file.
func schemaOf(btx *bolt.Tx) (uint32, error) {
	m := btx.Bucket(bucketMeta)
	if m == nil {
		return 0, fmt.Errorf("%w: bucket %q is missing", ErrCorrupt, bucketMeta)
	}
	v := m.Get(keySchema)
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: schema_version is missing or malformed", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(v)
	if n == 0 {
		return 0, fmt.Errorf("%w: schema_version is 0", ErrCorrupt)
	}
	return n, nil
}

// checkBuckets checks that every bucket of schema version n exists.
func checkBuckets(btx *bolt.Tx, n uint32) error {
	for _, b := range allBuckets {
		if b.since <= n && btx.Bucket(b.name) == nil {
			return fmt.Errorf("%w: bucket %q is missing", ErrCorrupt, b.name)
		}
	}
	return nil
}

// Schema returns the file's schema version and creation time.
func (t *Tx) Schema() (version uint32, createdAt string) {
	m := t.tx.Bucket(bucketMeta)
	if v := m.Get(keySchema); len(v) == 4 {
		version = binary.BigEndian.Uint32(v)
	}
	return version, string(m.Get(keyCreated))
}
