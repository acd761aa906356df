package kcache

import (
	"io"

	"github.com/kcache/kcache/index"
)

// TransferOptions tune Push and Pull.
type TransferOptions struct {
	// Progress, when not nil, is called as the bytes of each blob move
	// (after every read of up to 1 MiB and once at the end). It runs on the
	// transferring goroutine, so it should be quick.
	Progress func(TransferProgress)
}

// TransferProgress is how far one blob's transfer has come.
type TransferProgress struct {
	Key    string
	Role   string // RoleImage or RoleVmlinux
	Object string // the remote object's name
	Done   int64
	Total  int64
}

// BlobTransfer is what Push or Pull did with one blob of an entry.
type BlobTransfer struct {
	Role   string `json:"role"` // RoleImage or RoleVmlinux
	Digest string `json:"sha256"`
	Size   int64  `json:"size"`
	// Transferred is false when the other side already had the blob.
	Transferred bool `json:"transferred"`
}

// TransferReport describes one Push or Pull of one key.
type TransferReport struct {
	Key    string         `json:"key"`
	Remote string         `json:"remote"`
	Blobs  []BlobTransfer `json:"blobs"`
	// Bytes is how many blob bytes crossed the network (manifests, a few
	// hundred bytes each, are not counted).
	Bytes int64 `json:"bytes"`
	// UpToDate is set by Pull when the local entry already matched the
	// remote one, so nothing was installed.
	UpToDate bool `json:"up_to_date"`
}

// entryBlobs lists rec's content blobs (not its manifest) with their roles.
func entryBlobs(rec *index.Record) []BlobTransfer {
	bs := []BlobTransfer{{Role: RoleImage, Digest: rec.Image.Digest, Size: rec.Image.Size}}
	if rec.Vmlinux != nil {
		bs = append(bs, BlobTransfer{Role: RoleVmlinux, Digest: rec.Vmlinux.Digest, Size: rec.Vmlinux.Size})
	}
	return bs
}

// scrubForRemote removes what only makes sense on this machine before a
// record leaves it: the local source tree path (as ktstr does) and where a
// migrated entry came from. What stays is what another machine needs to use
// the kernel and tell it apart.
func scrubForRemote(rec *index.Record) {
	rec.Source.SourceTreePath = nil
	rec.Migrated = nil
	rec.LastUsed, rec.Corrupt, rec.Manifest = "", nil, index.Blob{}
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r    io.Reader
	fn   func(TransferProgress)
	p    TransferProgress
	next int64 // report when Done reaches this
}

const progressStep = 1 << 20

func newProgressReader(r io.Reader, fn func(TransferProgress), p TransferProgress) io.Reader {
	if fn == nil {
		return r
	}
	fn(p)
	return &progressReader{r: r, fn: fn, p: p, next: progressStep}
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Done += int64(n)
	if pr.p.Done >= pr.next || (err != nil && n > 0) || pr.p.Done == pr.p.Total && n > 0 {
		pr.fn(pr.p)
		pr.next = pr.p.Done + progressStep
	}
	return n, err
}
