package index

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Source says where a kernel's source came from. Type is "tarball", "git" or
// "local"; the other fields belong to some types only and are nil otherwise.
type Source struct {
	Type           string  `msgpack:"type" json:"type"`
	GitHash        *string `msgpack:"git_hash" json:"git_hash,omitempty"`
	Ref            *string `msgpack:"ref" json:"ref,omitempty"`
	SourceTreePath *string `msgpack:"source_tree_path" json:"source_tree_path,omitempty"`
}

// Blob is a reference to content in the blob directory.
type Blob struct {
	Digest string `msgpack:"sha256"` // 64 lowercase hex
	Size   int64  `msgpack:"size"`
}

// Record is one cache entry: ktstr's metadata fields plus what the index adds.
// Nullable fields are pointers so that "unset" survives a round trip.
type Record struct {
	Key                    string  `msgpack:"key"`
	Version                *string `msgpack:"version"`
	Source                 Source  `msgpack:"source"`
	Arch                   string  `msgpack:"arch"`
	ImageName              string  `msgpack:"image_name"`
	ConfigHash             *string `msgpack:"config_hash"`
	BuiltAt                string  `msgpack:"built_at"` // YYYY-MM-DDTHH:MM:SSZ
	KconfigHash            *string `msgpack:"kconfig_hash"`
	HasVmlinux             bool    `msgpack:"has_vmlinux"`
	VmlinuxStripped        bool    `msgpack:"vmlinux_stripped"`
	SourceVmlinuxSize      *uint64 `msgpack:"source_vmlinux_size"`
	SourceVmlinuxMtimeSecs *int64  `msgpack:"source_vmlinux_mtime_secs"`

	Image               Blob    `msgpack:"image"`
	Vmlinux             *Blob   `msgpack:"vmlinux"`
	VmlinuxOriginalSize *int64  `msgpack:"vmlinux_original_size"`
	BuildID             *string `msgpack:"build_id"`
	ConfigHZ            *uint64 `msgpack:"config_hz"`
	StoredAt            string  `msgpack:"stored_at"` // RFC 3339 UTC, nanoseconds
	// Manifest is the digest of this record's manifest blob. It is not part
	// of the manifest itself.
	Manifest Blob `msgpack:"manifest"`
	// LastUsed is updated by lookups at most once an hour (RFC 3339 UTC);
	// empty until the first lookup. Not part of the manifest.
	LastUsed string `msgpack:"last_used"`
	// Corrupt is set by verify and doctor when a blob of the entry is
	// missing or damaged; Put of a fresh record clears it. Not part of the
	// manifest.
	Corrupt *CorruptMark `msgpack:"corrupt,omitempty"`
	// Migrated is set on entries that kcache migrate imported from a ktstr
	// cache: what the legacy files were, so that a later migrate can tell an
	// unchanged entry (skip) from a changed one (store again) and verify
	// the source before removing it. Part of the manifest.
	Migrated *Migrated `msgpack:"migrated,omitempty"`
}

// Migrated describes the ktstr cache entry a record was imported from.
type Migrated struct {
	From          string `msgpack:"from"`           // the ktstr cache root
	ImageSHA256   string `msgpack:"image_sha256"`   // of <entry>/<image_name>, as imported
	VmlinuxSHA256 string `msgpack:"vmlinux_sha256"` // of <entry>/vmlinux before kcache stripped it; "" without
	VmlinuxSize   int64  `msgpack:"vmlinux_size"`
	// LegacyStripped is the legacy entry's vmlinux_stripped: ktstr had
	// already stripped the vmlinux that kcache stripped again.
	LegacyStripped bool   `msgpack:"legacy_stripped"`
	MigratedAt     string `msgpack:"migrated_at"` // RFC 3339 UTC
}

// Digests returns every blob the record references, manifest included.
func (r *Record) Digests() []string {
	ds := []string{r.Image.Digest}
	if r.Vmlinux != nil {
		ds = append(ds, r.Vmlinux.Digest)
	}
	if r.Manifest.Digest != "" {
		ds = append(ds, r.Manifest.Digest)
	}
	return ds
}

// DecodeError is a record that is stored but cannot be used. Kind is one of
// "malformed" (not msgpack of a record) or "schema_drift" (a required field
// is missing or has the wrong shape).
type DecodeError struct {
	Key    string
	Kind   string
	Detail string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("index record %s: %s", e.Kind, e.Detail)
}

func encodeRecord(r *Record) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("encode record %q: %w", r.Key, err)
	}
	return buf.Bytes(), nil
}

// decodeRecord decodes and checks a record. The value is copied out of
// data, so the result stays valid after the transaction ends.
func decodeRecord(key string, data []byte) (*Record, error) {
	r := new(Record)
	if err := decodeRecordInto(key, data, r); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeRecordInto is decodeRecord into r, which it overwrites; on an error
// r is left zero. A record as encodeRecord writes it takes decodeFast's
// path, anything else msgpack's, with the same result either way.
func decodeRecordInto(key string, data []byte, r *Record) error {
	*r = Record{}
	if !decodeFast(data, r) {
		*r = Record{}
		if _, err := checkBounds(data, 0); err != nil {
			return &DecodeError{Key: key, Kind: "malformed", Detail: err.Error()}
		}
		if err := msgpack.Unmarshal(data, r); err != nil {
			*r = Record{}
			return &DecodeError{Key: key, Kind: "malformed", Detail: err.Error()}
		}
	}
	if err := r.check(); err != nil {
		*r = Record{}
		return &DecodeError{Key: key, Kind: "schema_drift", Detail: err.Error()}
	}
	return nil
}

// check enforces the required fields, in the order ktstr reports them.
func (r *Record) check() error {
	switch {
	case r.Key == "":
		return errors.New("missing field `key`")
	case r.Source.Type == "":
		return errors.New("missing field `source`")
	case r.Source.Type != "tarball" && r.Source.Type != "git" && r.Source.Type != "local":
		return fmt.Errorf("unknown source type %q", r.Source.Type)
	case r.Arch == "":
		return errors.New("missing field `arch`")
	case r.ImageName == "":
		return errors.New("missing field `image_name`")
	case r.BuiltAt == "":
		return errors.New("missing field `built_at`")
	case len(r.Image.Digest) != 64:
		return errors.New("missing field `image`")
	case r.HasVmlinux != (r.Vmlinux != nil):
		return errors.New("has_vmlinux disagrees with the vmlinux blob")
	case r.Vmlinux != nil && len(r.Vmlinux.Digest) != 64:
		return errors.New("malformed field `vmlinux`")
	}
	return nil
}

// manifestMagic starts every manifest blob, so that a blob directory walk can
// tell manifests from images and a future format can change the version.
var manifestMagic = []byte("KCACHE-MANIFEST v1\n")

// EncodeManifest returns the self-describing manifest of r: the magic line,
// then the record as msgpack without the fields that change after storing
// (Manifest, LastUsed, Corrupt).
func EncodeManifest(r *Record) ([]byte, error) {
	c := *r
	c.Manifest, c.LastUsed, c.Corrupt = Blob{}, "", nil
	body, err := encodeRecord(&c)
	if err != nil {
		return nil, err
	}
	return append(append([]byte{}, manifestMagic...), body...), nil
}

// IsManifest reports whether data starts like a manifest blob.
func IsManifest(data []byte) bool { return bytes.HasPrefix(data, manifestMagic) }

// DecodeManifest parses a manifest blob back into a record.
func DecodeManifest(data []byte) (*Record, error) {
	if !IsManifest(data) {
		return nil, errors.New("not a kcache manifest (bad magic)")
	}
	return decodeRecord("", data[len(manifestMagic):])
}

// BlobRef is the index's bookkeeping for one blob.
type BlobRef struct {
	Size int64 `msgpack:"size"`
	Refs int64 `msgpack:"refs"`
	// Dying is set (RFC 3339 UTC) when Refs reached zero: the remover that
	// released the blob unlinks its file after its commit, outside the
	// index lock, and then Forgets the record. While it is set, Put refuses
	// to reference the blob, so no writer can adopt a file about to vanish.
	Dying string `msgpack:"dying,omitempty"`
	// Ctime is the blob file's inode change time (unix nanoseconds) when
	// kcache last installed, deduplicated or re-hashed it; 0 (absent in
	// records written before it existed) means unknown. Any write through
	// any link to the file moves its ctime, so a file whose ctime differs
	// from this one is not trusted to hold the blob until it is hashed
	// again (see SetBlobCtime).
	Ctime int64 `msgpack:"ctime,omitempty"`
}

// Pin keeps an entry from being collected.
type Pin struct {
	PinnedAt string `msgpack:"pinned_at"`
	Reason   string `msgpack:"reason"`
}
