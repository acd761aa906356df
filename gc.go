package kcache

// Collection: clean (ktstr's command, with locks) and gc (policies), both on
// top of removeVictims, the one deletion protocol.
//
// Decisions, for the record:
//
//   - Planning reads the cache without locks (List, plus one read-only
//     snapshot of record digests, blob refcounts and pins); the removal then
//     takes each victim's lock without waiting and re-checks pins inside its
//     transaction. What changed in between is reported, never removed blindly.
//   - A dry run plans exactly as a real run does, and also predicts what the
//     real run's locks will say from /proc/locks (entries held right now are
//     reported as kept in use), so that `--dry-run` then a real run list the
//     same victims with the same freed bytes when nothing else happens
//     meanwhile.
//   - Freed bytes are deduplication-aware: an entry frees only the blobs whose
//     reference count its removal (and the removal of the victims before it,
//     in report order) brings to zero. Blobs shared with a surviving entry —
//     valid, corrupt or pinned — free nothing.
//   - gc leaves corrupt entries to `clean` (ktstr: corrupt entries are always
//     clean candidates) and `doctor`, and reports them; their blobs still count
//     in the cache's size. A gc on a schedule should not delete what a human
//     may want to inspect or rebuild, and an index entry whose record does not
//     decode has no built_at or last_used to judge it by.
//   - Pins always survive. The size walks (max-size, min-free) step over
//     entries that cannot be removed (pinned, or locked when planning), since
//     removing them would free nothing.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/units"
	"golang.org/x/sys/unix"
)

// ---- shared planning ----

// plan is a read-only snapshot of what collection needs beyond List.
type plan struct {
	listing *Listing
	digests map[string][]string      // key -> blob digests of its record (decodable records only)
	blobs   map[string]index.BlobRef // live blobs (refs > 0)
	pins    map[string]index.Pin
	inUse   map[string]HeldLock // entry locks held right now (best effort)
}

func (c *Cache) snapshot(ctx context.Context) (*plan, error) {
	l, err := c.List(ctx, ListOptions{})
	if err != nil {
		return nil, err
	}
	p := &plan{listing: l, digests: map[string][]string{}, blobs: map[string]index.BlobRef{},
		pins: map[string]index.Pin{}, inUse: map[string]HeldLock{}}
	if len(l.Entries) == 0 {
		return p, nil
	}
	_, err = c.view(ctx, func(tx *index.Tx) error {
		if p.pins, err = tx.Pins(); err != nil {
			return err
		}
		if err := tx.ForEach(func(key string, rec *index.Record, err error) error {
			if err == nil {
				p.digests[key] = rec.Digests()
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEachBlob(func(d string, ref index.BlobRef) error {
			if ref.Refs > 0 && ref.Dying == "" {
				p.blobs[d] = ref
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("collect %s: %w", c.root, err)
	}
	held, _, err := c.HeldLocks(ctx)
	if err != nil {
		c.warnf("cannot tell which entries are in use (%v); the removal will find out", err)
	}
	for _, h := range held {
		p.inUse[h.Key] = h
	}
	return p, nil
}

// size is the total size of the blobs the index references.
func (p *plan) size() int64 {
	var n int64
	for _, b := range p.blobs {
		n += b.Size
	}
	return n
}

// freer simulates the reference counting of a removal, one entry at a time.
type freer struct {
	p    *plan
	left map[string]int64
}

func (p *plan) newFreer() *freer { return &freer{p: p, left: map[string]int64{}} }

// remove simulates removing key and returns the bytes that frees.
func (f *freer) remove(key string) int64 {
	var freed int64
	for _, d := range f.p.digests[key] {
		b, ok := f.p.blobs[d]
		if !ok {
			continue
		}
		n, seen := f.left[d]
		if !seen {
			n = b.Refs
		}
		n--
		f.left[d] = n
		if n == 0 {
			freed += b.Size
		}
	}
	return freed
}

// execute removes victims (or, with dryRun, predicts what removing them
// does) and fills r. Victims that are pinned are never handed to the removal.
func (c *Cache) execute(ctx context.Context, p *plan, victims []Victim, dryRun bool, r *Removal) error {
	var todo []Victim
	for _, v := range victims {
		if _, ok := p.pins[v.Key]; ok {
			r.KeptPinned = append(r.KeptPinned, v.Key)
			continue
		}
		todo = append(todo, v)
	}
	if dryRun {
		f := p.newFreer()
		for _, v := range todo {
			if h, ok := p.inUse[v.Key]; ok {
				r.KeptInUse = append(r.KeptInUse, h)
				continue
			}
			n := f.remove(v.Key)
			r.Removed = append(r.Removed, Removed{Key: v.Key, Reason: v.Reason, FreedBytes: n})
			r.FreedBytes += n
		}
		return nil
	}
	got, err := c.removeVictims(ctx, todo, RemoveOptions{})
	if err != nil {
		return err
	}
	r.Removed = append(r.Removed, got.Removed...)
	r.KeptInUse = append(r.KeptInUse, got.KeptInUse...)
	r.KeptPinned = append(r.KeptPinned, got.KeptPinned...)
	r.NotFound = append(r.NotFound, got.NotFound...)
	r.FreedBytes += got.FreedBytes
	r.IndexHeld = got.IndexHeld
	return nil
}

func newRemoval() Removal {
	return Removal{Removed: []Removed{}, KeptInUse: []HeldLock{}, KeptPinned: []string{}, NotFound: []string{}}
}

// ---- clean ----

// CleanOptions select what Clean removes, with ktstr's rules.
type CleanOptions struct {
	// Keep keeps the Keep newest usable entries (by built_at); corrupt
	// entries never use a keep slot.
	Keep int
	// CorruptOnly removes corrupt entries only (Keep is then ignored).
	CorruptOnly bool
	// DryRun removes nothing and reports what a real run would remove.
	DryRun bool
	// Only, when not nil, restricts the removal to these keys — what a
	// user confirmed after a dry run. A key that is no longer a candidate
	// is not removed.
	Only []string
}

// CleanReport says what Clean removed or, with DryRun, would remove.
type CleanReport struct {
	DryRun bool `json:"dry_run"`
	// Candidates are the entries selected, in List order (pinned ones and
	// those in use included; see Removal for what became of each).
	Candidates []Listed `json:"-"`
	Removal
	Duration time.Duration `json:"-"`
}

// Clean removes corrupt entries and every usable entry but the Keep newest,
// as ktstr's `cache clean` does, except that
// pinned entries are never removed and an entry whose lock is held (a VM
// running it, a store replacing it) is skipped and reported, not deleted.
func (c *Cache) Clean(ctx context.Context, opt CleanOptions) (*CleanReport, error) {
	start := time.Now()
	if opt.Keep < 0 {
		return nil, invalidf("clean: keep %d is negative", opt.Keep)
	}
	if !opt.DryRun && c.opt.ReadOnly {
		return nil, ErrReadOnly
	}
	p, err := c.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	rep := &CleanReport{DryRun: opt.DryRun, Candidates: []Listed{}, Removal: newRemoval()}
	var only map[string]bool
	if opt.Only != nil {
		only = map[string]bool{}
		for _, k := range opt.Only {
			only[k] = true
		}
	}
	reason := "clean"
	switch {
	case opt.CorruptOnly:
		reason = "clean --corrupt-only"
	case opt.Keep > 0:
		reason = fmt.Sprintf("clean --keep %d", opt.Keep)
	}
	var victims []Victim
	valid := 0
	for _, le := range p.listing.Entries {
		why := reason
		if le.Corrupt != nil {
			why = "corrupt " + le.Corrupt.Kind
		} else {
			valid++
			if opt.CorruptOnly || valid <= opt.Keep {
				continue
			}
		}
		if only != nil && !only[le.Key] {
			continue
		}
		rep.Candidates = append(rep.Candidates, le)
		victims = append(victims, Victim{Key: le.Key, Reason: why})
	}
	if err := c.execute(ctx, p, victims, opt.DryRun, &rep.Removal); err != nil {
		return nil, fmt.Errorf("clean %s: %w", c.root, err)
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// ---- gc ----

// GC policy fields for GCOptions.KeepPer.
const (
	GroupVersion = "version"
	GroupArch    = "arch"
	GroupSource  = "source"
)

// GCOptions are gc's policies. An entry survives if any given policy keeps
// it; with no policy given, GC removes no entry and only does housekeeping
// (the Sweep). Pinned entries always survive; corrupt entries are left to
// Clean and doctor.
type GCOptions struct {
	// Keep, when not nil, keeps the *Keep newest entries by built_at.
	Keep *int
	// KeepPer keeps the N newest entries (by built_at) of each group of
	// entries that share a field: GroupVersion (entries without a version
	// form one group), GroupArch or GroupSource (the source type: tarball,
	// git, local). Each field is a policy of its own.
	KeepPer map[string]int
	// MaxAge, when > 0, keeps entries used (last_used, else stored_at)
	// within MaxAge of Now.
	MaxAge time.Duration
	// MaxSize, when > 0, removes least recently used entries until the
	// blobs the index references total at most MaxSize bytes, and keeps
	// the rest.
	MaxSize int64
	// MinFree (bytes) or MinFreePercent (of the filesystem holding the
	// cache), when > 0, removes least recently used entries until that much
	// space would be free, and keeps the rest.
	MinFree        int64
	MinFreePercent float64
	// Grace is how old an unreferenced blob must be before the sweep
	// removes it; 0 means DefaultSweepGrace unless NoGrace.
	Grace time.Duration
	// NoGrace: unreferenced blobs of any age go (see SweepOptions.NoGrace).
	NoGrace bool
	// DryRun removes nothing and reports what a real run would do.
	DryRun bool
	// FreeSpace reports the free (available to unprivileged users) and
	// total bytes of the filesystem holding path; nil means statfs(2).
	FreeSpace func(path string) (free, total uint64, err error)
}

// GCReport says what GC removed or, with DryRun, would remove.
type GCReport struct {
	DryRun bool `json:"dry_run"`
	// Policies are the policies given, as they appear in reasons.
	Policies []string `json:"policies"`
	Removal
	// Corrupt are corrupt entries gc left alone (see Clean).
	Corrupt []string `json:"corrupt"`
	// SizeBefore is the total size of the blobs the index referenced.
	SizeBefore int64 `json:"size_before"`
	// Housekeeping (Sweep).
	OrphansRemoved int           `json:"orphans_removed"`
	OrphanBytes    int64         `json:"orphan_bytes"`
	StagingRemoved []string      `json:"staging_removed"`
	DyingFinished  int           `json:"dying_finished"`
	Duration       time.Duration `json:"-"`
}

// policy is one gc policy: a label and the set of keys it keeps.
type policy struct {
	label string
	keeps map[string]bool
}

// gcCand is a usable entry as the policies see it.
type gcCand struct {
	e    *Entry
	used time.Time // last_used, else stored_at
}

// GC applies the policies of opt, then sweeps (orphan blobs older than the
// grace period, staging directories of dead writers, blobs left dying by a
// dead remover). A real run records gc_runs, last_gc and last_gc_freed_bytes
// in the index's stats.
func (c *Cache) GC(ctx context.Context, opt GCOptions) (*GCReport, error) {
	start := time.Now()
	if err := opt.check(); err != nil {
		return nil, err
	}
	if !opt.DryRun && c.opt.ReadOnly {
		return nil, ErrReadOnly
	}
	now := c.now()
	rep := &GCReport{DryRun: opt.DryRun, Policies: []string{}, Removal: newRemoval(),
		Corrupt: []string{}, StagingRemoved: []string{}}
	if _, err := os.Stat(c.root); errors.Is(err, os.ErrNotExist) {
		rep.Duration = time.Since(start)
		return rep, nil // nothing to collect; create nothing
	}
	p, err := c.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	rep.SizeBefore = p.size()
	var cands []gcCand
	for _, le := range p.listing.Entries {
		if le.Corrupt != nil {
			rep.Corrupt = append(rep.Corrupt, le.Key)
			continue
		}
		cands = append(cands, gcCand{e: le.Entry, used: lastUse(le.Entry)})
	}
	policies, err := c.policies(opt, p, cands, now)
	if err != nil {
		return nil, err
	}
	for _, pol := range policies {
		rep.Policies = append(rep.Policies, pol.label)
	}
	if len(policies) > 0 {
		reason := strings.Join(rep.Policies, ", ")
		var victims []Victim
		for _, cd := range cands { // List order: newest built_at first
			kept := false
			for _, pol := range policies {
				kept = kept || pol.keeps[cd.e.Key]
			}
			if !kept {
				victims = append(victims, Victim{Key: cd.e.Key, Reason: reason})
			}
		}
		if err := c.execute(ctx, p, victims, opt.DryRun, &rep.Removal); err != nil {
			return nil, fmt.Errorf("gc %s: %w", c.root, err)
		}
	}
	sw, err := c.Sweep(ctx, SweepOptions{Grace: opt.Grace, NoGrace: opt.NoGrace, DryRun: opt.DryRun})
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", c.root, err)
	}
	rep.OrphansRemoved, rep.OrphanBytes = sw.OrphansRemoved, sw.OrphanBytes
	rep.StagingRemoved = append(rep.StagingRemoved, sw.StagingRemoved...)
	rep.DyingFinished = sw.DyingFinished
	if !opt.DryRun {
		if _, err := c.fs.Lstat(c.IndexPath()); err == nil {
			freed := rep.FreedBytes + rep.OrphanBytes
			err := c.update(ctx, func(tx *index.Tx) ([]string, error) {
				return nil, errors.Join(tx.AddStat(index.StatGCRuns, 1),
					tx.SetStat(index.StatLastGC, now.Unix()),
					tx.SetStat(index.StatLastGCFree, freed))
			})
			if err != nil {
				return nil, fmt.Errorf("gc %s: record stats: %w", c.root, err)
			}
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

func (opt *GCOptions) check() error {
	switch {
	case opt.Keep != nil && *opt.Keep < 0:
		return invalidf("gc: keep %d is negative", *opt.Keep)
	case opt.MaxAge < 0:
		return invalidf("gc: max-age %s is negative", opt.MaxAge)
	case opt.MaxSize < 0:
		return invalidf("gc: max-size %d is negative", opt.MaxSize)
	case opt.MinFree < 0:
		return invalidf("gc: min-free %d is negative", opt.MinFree)
	case opt.MinFreePercent < 0 || opt.MinFreePercent > 100:
		return invalidf("gc: min-free %g%% is not between 0 and 100", opt.MinFreePercent)
	case opt.MinFree > 0 && opt.MinFreePercent > 0:
		return invalidf("gc: give min-free in bytes or in percent, not both")
	}
	for field, n := range opt.KeepPer {
		if field != GroupVersion && field != GroupArch && field != GroupSource {
			return invalidf("gc: keep-per field %q is not one of version, arch, source", field)
		}
		if n < 0 {
			return invalidf("gc: keep-per %s:%d is negative", field, n)
		}
	}
	return nil
}

// lastUse is when the entry was last used: last_used, else stored_at, else
// built_at (the zero time if none parses, which makes it the oldest).
func lastUse(e *Entry) time.Time {
	for _, s := range []string{e.LastUsed, e.StoredAt, e.BuiltAt} {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// policies evaluates every given policy over cands (in List order).
func (c *Cache) policies(opt GCOptions, p *plan, cands []gcCand, now time.Time) ([]policy, error) {
	var out []policy
	if opt.Keep != nil {
		pol := policy{label: fmt.Sprintf("keep %d", *opt.Keep), keeps: map[string]bool{}}
		for i, cd := range cands {
			if i < *opt.Keep {
				pol.keeps[cd.e.Key] = true
			}
		}
		out = append(out, pol)
	}
	for _, field := range []string{GroupVersion, GroupArch, GroupSource} {
		n, ok := opt.KeepPer[field]
		if !ok {
			continue
		}
		pol := policy{label: fmt.Sprintf("keep-per %s:%d", field, n), keeps: map[string]bool{}}
		seen := map[string]int{}
		for _, cd := range cands {
			g := groupOf(cd.e, field)
			if seen[g] < n {
				pol.keeps[cd.e.Key] = true
			}
			seen[g]++
		}
		out = append(out, pol)
	}
	if opt.MaxAge > 0 {
		pol := policy{label: "max-age " + units.Duration(opt.MaxAge), keeps: map[string]bool{}}
		for _, cd := range cands {
			if now.Sub(cd.used) <= opt.MaxAge {
				pol.keeps[cd.e.Key] = true
			}
		}
		out = append(out, pol)
	}
	if opt.MaxSize > 0 {
		excess := p.size() - opt.MaxSize
		out = append(out, sizeWalk(p, cands, "max-size "+units.Size(opt.MaxSize), excess))
	}
	if opt.MinFree > 0 || opt.MinFreePercent > 0 {
		probe := opt.FreeSpace
		if probe == nil {
			probe = statFS
		}
		free, total, err := probe(c.root)
		if err != nil {
			return nil, fmt.Errorf("gc: free space of %s: %w", c.root, err)
		}
		target, label := opt.MinFree, "min-free "+units.Size(opt.MinFree)
		if opt.MinFreePercent > 0 {
			target = int64(opt.MinFreePercent / 100 * float64(total))
			label = "min-free " + strconv.FormatFloat(opt.MinFreePercent, 'f', -1, 64) + "%"
		}
		out = append(out, sizeWalk(p, cands, label, target-int64(free)))
	}
	return out, nil
}

// sizeWalk condemns least recently used entries until their removal frees
// at least need bytes, and keeps every other entry. Entries that cannot be
// removed (pinned, or in use when planning) are stepped over.
func sizeWalk(p *plan, cands []gcCand, label string, need int64) policy {
	pol := policy{label: label, keeps: map[string]bool{}}
	lru := append([]gcCand(nil), cands...)
	sort.SliceStable(lru, func(i, j int) bool {
		a, b := lru[i], lru[j]
		if !a.used.Equal(b.used) {
			return a.used.Before(b.used)
		}
		if a.e.BuiltAt != b.e.BuiltAt {
			return a.e.BuiltAt < b.e.BuiltAt
		}
		return a.e.Key < b.e.Key
	})
	f := p.newFreer()
	var freed int64
	for _, cd := range lru {
		_, pinned := p.pins[cd.e.Key]
		_, busy := p.inUse[cd.e.Key]
		if freed >= need || pinned || busy {
			pol.keeps[cd.e.Key] = true
			continue
		}
		freed += f.remove(cd.e.Key)
	}
	return pol
}

func groupOf(e *Entry, field string) string {
	switch field {
	case GroupVersion:
		if e.Version == nil {
			return ""
		}
		return "v:" + *e.Version
	case GroupArch:
		return e.Arch
	}
	return e.Source.Type
}

// statFS returns the bytes available to unprivileged users and the total
// size of the filesystem holding path (statfs(2)). A path that does not
// exist yet is measured at its nearest existing parent.
func statFS(path string) (free, total uint64, err error) {
	var st unix.Statfs_t
	for {
		err = unix.Statfs(path, &st)
		if !errors.Is(err, unix.ENOENT) || path == "/" || path == "." {
			break
		}
		path = filepath.Dir(path)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}
