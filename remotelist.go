package kcache

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/remote"
)

// RemoteEntry is one key a remote holds.
type RemoteEntry struct {
	Key      string
	Modified time.Time     // when its manifest was last written
	Record   *index.Record // nil when the manifest is unusable
	Problem  string        // why the manifest is unusable, "" otherwise
}

// ListRemote returns every key the remote has a manifest for: usable ones
// newest built_at first (ties by key), as List orders the local cache, then
// the unusable ones by key with the reason. It reads each manifest (a few
// hundred bytes), several at a time.
func ListRemote(ctx context.Context, r remote.Remote) ([]RemoteEntry, error) {
	var out []RemoteEntry
	err := r.List(ctx, remote.ManifestPrefix, func(o remote.Object) error {
		key := strings.TrimPrefix(o.Name, remote.ManifestPrefix)
		e := RemoteEntry{Key: key, Modified: o.Modified}
		if err := ValidateKey(key); err != nil {
			e.Problem = err.Error()
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range out {
		if out[i].Problem != "" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(e *RemoteEntry) {
			defer func() { <-sem; wg.Done() }()
			rec, err := fetchManifest(ctx, r, e.Key)
			if err != nil {
				e.Problem = err.Error()
				return
			}
			e.Record = rec
		}(&out[i])
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	built := func(e RemoteEntry) string {
		if e.Record == nil {
			return ""
		}
		return e.Record.BuiltAt
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return listedBefore(a.Record != nil, b.Record != nil, built(a), built(b), a.Key, b.Key)
	})
	return out, nil
}
