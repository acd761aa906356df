package kcache

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/strip"
)

// ErrNoConfig means a kernel carries no embedded config.
var ErrNoConfig = strip.ErrNoIKConfig

// KernelConfig returns the kernel config embedded (IKCONFIG) in key's
// vmlinux. An entry without a vmlinux, or a kernel built without
// CONFIG_IKCONFIG, is an ErrNoConfig error that says which.
func (c *Cache) KernelConfig(ctx context.Context, key string) (string, error) {
	e, err := c.Describe(ctx, key)
	if err != nil {
		return "", err
	}
	if e.VmlinuxPath == "" {
		return "", fmt.Errorf("cache entry %q has no vmlinux, so no embedded config: %w", key, ErrNoConfig)
	}
	f, err := c.fs.Open(e.VmlinuxPath)
	if err != nil {
		return "", fmt.Errorf("config of %q: %w", key, err)
	}
	defer f.Close()
	config, err := strip.IKConfigELF(f, e.Vmlinux.Size)
	if errors.Is(err, strip.ErrNoIKConfig) {
		return "", fmt.Errorf("cache entry %q: %w", key, err)
	}
	if err != nil {
		return "", fmt.Errorf("config of %q: %w (the entry's vmlinux blob may be damaged)", key, err)
	}
	return config, nil
}

// LookupBuildID finds the entry whose vmlinux has the GNU build ID id (hex,
// any case) and looks it up like Lookup. When several entries share the
// vmlinux, the newest built_at wins (ties: the smallest key).
func (c *Cache) LookupBuildID(ctx context.Context, id string) (*Entry, error) {
	e, err := c.lookupBuildID(ctx, id)
	c.countLookup(err)
	return e, err
}

func (c *Cache) lookupBuildID(ctx context.Context, id string) (*Entry, error) {
	id = strings.ToLower(id)
	if id == "" || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, invalidf("build ID %q is not hex", id)
	}
	var best *index.Record
	_, err := c.view(ctx, func(tx *index.Tx) error {
		return tx.ForEach(func(_ string, rec *index.Record, err error) error {
			if err != nil || rec.BuildID == nil || *rec.BuildID != id {
				return nil
			}
			if best == nil || rec.BuiltAt > best.BuiltAt || (rec.BuiltAt == best.BuiltAt && rec.Key < best.Key) {
				best = rec
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("lookup build ID %s: %w", id, err)
	}
	if best == nil {
		return nil, &NotFoundError{BuildID: id}
	}
	return c.lookup(ctx, best.Key)
}
