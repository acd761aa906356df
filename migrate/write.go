package migrate

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/kcache/kcache/index"
)

// MetadataOf returns the ktstr metadata of a kcache record, as export
// writes it: kcache's kconfig_hash is ktstr's ktstr_kconfig_hash; the
// fields kcache adds (digests, build ID, stored_at, ...) have no place in
// it and are left out.
func MetadataOf(rec *index.Record) *Metadata {
	return &Metadata{
		Version: rec.Version, Source: Source(rec.Source), Arch: rec.Arch,
		ImageName: rec.ImageName, ConfigHash: rec.ConfigHash, BuiltAt: rec.BuiltAt,
		KtstrKconfigHash: rec.KconfigHash, HasVmlinux: rec.HasVmlinux,
		VmlinuxStripped:   rec.HasVmlinux && rec.VmlinuxStripped,
		SourceVmlinuxSize: rec.SourceVmlinuxSize, SourceVmlinuxMtimeSecs: rec.SourceVmlinuxMtimeSecs,
	}
}

// MarshalMetadata returns m as ktstr writes metadata.json: pretty printed
// with a 2-space indent, keys in ktstr's order, every optional key present
// (null when unset), no trailing newline. ParseMetadata reads it back to the
// same value. Reader and writer of the format live together here.
func MarshalMetadata(m *Metadata) ([]byte, error) {
	return marshalNoHTMLEscape(metadataJSON{
		Version: m.Version, Source: m.Source, Arch: m.Arch,
		ImageName: m.ImageName, ConfigHash: m.ConfigHash, BuiltAt: m.BuiltAt,
		KtstrKconfigHash: m.KtstrKconfigHash, HasVmlinux: m.HasVmlinux,
		VmlinuxStripped: m.VmlinuxStripped, SourceVmlinuxSize: m.SourceVmlinuxSize,
		SourceVmlinuxMtimeSecs: m.SourceVmlinuxMtimeSecs,
	}, "  ")
}

// metadataJSON is ktstr's metadata.json: fields in ktstr's order, every
// optional one present (null when unset).
type metadataJSON struct {
	Version                *string `json:"version"`
	Source                 Source  `json:"source"`
	Arch                   string  `json:"arch"`
	ImageName              string  `json:"image_name"`
	ConfigHash             *string `json:"config_hash"`
	BuiltAt                string  `json:"built_at"`
	KtstrKconfigHash       *string `json:"ktstr_kconfig_hash"`
	HasVmlinux             bool    `json:"has_vmlinux"`
	VmlinuxStripped        bool    `json:"vmlinux_stripped"`
	SourceVmlinuxSize      *uint64 `json:"source_vmlinux_size"`
	SourceVmlinuxMtimeSecs *int64  `json:"source_vmlinux_mtime_secs"`
}

// MarshalJSON writes ktstr's internally tagged source: "type" first, then
// every payload key of the variant in ktstr's order, null when unset.
func (s Source) MarshalJSON() ([]byte, error) {
	var v any
	switch s.Type {
	case "tarball":
		v = struct {
			Type string `json:"type"`
		}{s.Type}
	case "git":
		v = struct {
			Type    string  `json:"type"`
			GitHash *string `json:"git_hash"`
			Ref     *string `json:"ref"`
		}{s.Type, s.GitHash, s.Ref}
	case "local":
		v = struct {
			Type           string  `json:"type"`
			SourceTreePath *string `json:"source_tree_path"`
			GitHash        *string `json:"git_hash"`
		}{s.Type, s.SourceTreePath, s.GitHash}
	default:
		return nil, fmt.Errorf("source type %q is not one of tarball, git, local", s.Type)
	}
	return marshalNoHTMLEscape(v, "")
}

// marshalNoHTMLEscape is json.Marshal(Indent) without escaping <, > and &
// (ktstr's serde_json writes them as they are) and without the encoder's
// trailing newline.
func marshalNoHTMLEscape(v any, indent string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
