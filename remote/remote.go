// Package remote is the shared tier: a store of named objects that many
// machines' caches push kernels to and pull them from. The local cache stays
// authoritative; a remote only ever adds entries to it.
//
// A remote holds the same two kinds of thing as a local cache, under names
// relative to the remote's own prefix:
//
//	blobs/sha256/<hex>   immutable content (boot images, stripped vmlinux),
//	                     named by its sha256, shared between keys, checked
//	                     against that digest on every download
//	manifests/<key>      one per cache key: the entry's manifest (the same
//	                     self-describing bytes as a local manifest blob, with
//	                     machine-local paths removed), written after every
//	                     blob it names
//
// Because a manifest is written last and blobs are never modified or deleted
// by push, a reader that finds a manifest finds its blobs; two machines pushing
// one key race safely (blobs are identical by name, the last manifest wins).
// Blobs are flat under blobs/sha256/ rather than fanned out as on local disk:
// object stores have no directory size limits to work around.
//
// The interface is deliberately small — stat, get, put and list by name — so
// that backends other than S3 (an OCI registry, say) can be added. There is
// no delete: kcache never removes remote objects (expiry is the bucket's
// lifecycle rules' job, see the README).
package remote

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is matched by errors for objects the remote does not have.
var ErrNotFound = errors.New("object not found")

// Object describes one stored object.
type Object struct {
	Name     string // relative to the remote's prefix
	Size     int64
	Modified time.Time
}

// Remote is a store of named, immutable-once-written objects. Names are
// relative to the remote's prefix and use "/" as separator. Put must be
// atomic: a concurrent Get sees the old object, the new one or none, never a
// part. Every error names the object and carries the server's message.
type Remote interface {
	// String names the remote for messages, e.g. "s3://bucket/prefix".
	String() string
	// Stat returns an object's size and time, or an error matching
	// ErrNotFound.
	Stat(ctx context.Context, name string) (Object, error)
	// Get opens an object for reading.
	Get(ctx context.Context, name string) (io.ReadCloser, Object, error)
	// Put stores size bytes read from r under name, replacing any object
	// there.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// List calls fn for every object whose name starts with prefix, in
	// lexical order.
	List(ctx context.Context, prefix string, fn func(Object) error) error
}

// Object name prefixes of the layout.
const (
	BlobPrefix     = "blobs/sha256/"
	ManifestPrefix = "manifests/"
)

// BlobName returns the object name of the blob with the given sha256 hex
// digest.
func BlobName(digest string) string { return BlobPrefix + digest }

// ManifestName returns the object name of key's manifest.
func ManifestName(key string) string { return ManifestPrefix + key }

// MaxManifestSize bounds how much of a manifest object is read: a real one is
// well under a kilobyte, and a hostile or mistaken remote must not make a
// pull read gigabytes into memory.
const MaxManifestSize = 1 << 20
