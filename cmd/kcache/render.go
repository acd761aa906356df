package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// entryJSON is the stable JSON form of a usable entry, shared by list, show,
// lookup and store. Field order is the documented order; nullable fields are
// always present.
type entryJSON struct {
	Key                 string     `json:"key"`
	Version             *string    `json:"version"`
	Source              sourceJSON `json:"source"`
	Arch                string     `json:"arch"`
	BuiltAt             string     `json:"built_at"`
	KconfigHash         *string    `json:"kconfig_hash"`
	KconfigStatus       *string    `json:"kconfig_status"`
	ConfigHash          *string    `json:"config_hash"`
	ImageName           string     `json:"image_name"`
	ImagePath           string     `json:"image_path"`
	ImageSHA256         string     `json:"image_sha256"`
	ImageSize           int64      `json:"image_size"`
	HasVmlinux          bool       `json:"has_vmlinux"`
	VmlinuxStripped     bool       `json:"vmlinux_stripped"`
	VmlinuxPath         *string    `json:"vmlinux_path"`
	VmlinuxSHA256       *string    `json:"vmlinux_sha256"`
	VmlinuxSize         *int64     `json:"vmlinux_size"`
	VmlinuxOriginalSize *int64     `json:"vmlinux_original_size"`
	BuildID             *string    `json:"build_id"`
	ConfigHZ            *uint64    `json:"config_hz"`
	SourceVmlinuxSize   *uint64    `json:"source_vmlinux_size"`
	SourceVmlinuxMtime  *int64     `json:"source_vmlinux_mtime_secs"`
	StoredAt            string     `json:"stored_at"`
	LastUsed            *string    `json:"last_used"`
	Pinned              bool       `json:"pinned"`
	PinReason           *string    `json:"pin_reason"`
}

// corruptJSON is the JSON form of an entry that cannot be used.
type corruptJSON struct {
	Key       string `json:"key"`
	Error     string `json:"error"`
	ErrorKind string `json:"error_kind"`
}

// sourceJSON renders a source as ktstr does: "type" first, then every
// payload key of that type, null when unset.
type sourceJSON index.Source

func (s sourceJSON) MarshalJSON() ([]byte, error) {
	type kv struct {
		k string
		v *string
	}
	var payload []kv
	switch s.Type {
	case "git":
		payload = []kv{{"git_hash", s.GitHash}, {"ref", s.Ref}}
	case "local":
		payload = []kv{{"source_tree_path", s.SourceTreePath}, {"git_hash", s.GitHash}}
	}
	t, err := json.Marshal(s.Type)
	if err != nil {
		return nil, err
	}
	out := append([]byte(`{"type":`), t...)
	for _, p := range payload {
		v, err := json.Marshal(p.v)
		if err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf(",%q:", p.k)...)
		out = append(out, v...)
	}
	return append(out, '}'), nil
}

func toEntryJSON(e *kcache.Entry, currentKconfig string) entryJSON {
	j := entryJSON{
		Key: e.Key, Version: e.Version, Source: sourceJSON(e.Source), Arch: e.Arch,
		BuiltAt: e.BuiltAt, KconfigHash: e.KconfigHash, ConfigHash: e.ConfigHash,
		ImageName: e.ImageName, ImagePath: e.ImagePath, ImageSHA256: e.Image.Digest,
		ImageSize: e.Image.Size, HasVmlinux: e.HasVmlinux, VmlinuxStripped: e.VmlinuxStripped,
		VmlinuxOriginalSize: e.VmlinuxOriginalSize, BuildID: e.BuildID, ConfigHZ: e.ConfigHZ,
		SourceVmlinuxSize: e.SourceVmlinuxSize, SourceVmlinuxMtime: e.SourceVmlinuxMtimeSecs,
		StoredAt: e.StoredAt, Pinned: e.Pinned,
	}
	if e.Pinned {
		r := e.PinReason
		j.PinReason = &r
	}
	if st := e.KconfigStatus(currentKconfig); st != "" {
		j.KconfigStatus = &st
	}
	if e.Vmlinux != nil {
		p, d, n := e.VmlinuxPath, e.Vmlinux.Digest, e.Vmlinux.Size
		j.VmlinuxPath, j.VmlinuxSHA256, j.VmlinuxSize = &p, &d, &n
	}
	if e.LastUsed != "" {
		lu := e.LastUsed
		j.LastUsed = &lu
	}
	return j
}

// reportEntryErr returns err, first printing the corrupt entry's JSON object
// when err is one and --json was asked for.
func reportEntryErr(a *app, asJSON bool, err error) error {
	var ce *kcache.CorruptError
	if asJSON && errors.As(err, &ce) {
		if werr := writeJSON(a.stdout, toCorruptJSON(ce)); werr != nil {
			return werr
		}
	}
	return err
}

func toCorruptJSON(c *kcache.CorruptError) corruptJSON {
	return corruptJSON{Key: c.Key, Error: c.Reason, ErrorKind: c.Kind}
}

// writeJSON prints v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// humanSize renders a byte count with binary units.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}
