package migrate

import (
	"fmt"
	"os"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
)

// A Step upgrades an index file from schema From to From+1. Apply runs
// inside one read-write transaction (index.Upgrader.Step), which also sets
// the new version and checks that the new version's buckets exist; a failed
// step leaves the file as it was.
type Step struct {
	From  uint32
	What  string // one line for humans
	Apply func(*index.UpgradeTx) error
}

// Steps are the schema upgrades in order: Steps[i].From == i+1, and the last
// step ends at index.SchemaVersion. Add a step (and its test, which builds
// the old shape and checks the new one) whenever index.SchemaVersion grows.
var Steps = []Step{
	{From: 1, What: "create the stats bucket (schema 1 created it on the first counted event)", Apply: addStatsBucket},
}

// addStatsBucket is step 1→2. Schema 1 created "stats" lazily, so a schema 1
// file may or may not have it. Nothing else changed between 1 and 2: the
// fields added to records and blob refs while schema 1 was current
// (index.Record.Corrupt, index.BlobRef.Dying) are omitempty in msgpack, so
// their absence decodes as unset and no value needs rewriting.
func addStatsBucket(tx *index.UpgradeTx) error {
	_, err := tx.Bolt().CreateBucketIfNotExists([]byte("stats"))
	return err
}

// BackupPath is where Upgrade keeps the file as it was before the step from
// schema v: <index>.v<v>.bak.
func BackupPath(indexPath string, v uint32) string {
	return fmt.Sprintf("%s.v%d.bak", indexPath, v)
}

// Result is what Upgrade did.
type Result struct {
	From, To uint32   // From == To: nothing to do
	Backups  []string // one per step applied, oldest schema first
	Took     time.Duration
}

// Upgrade brings the index file at path to index.SchemaVersion, one step at
// a time: before each step it copies the file to BackupPath (fsynced), then
// runs the step in one transaction. It holds the file open read-write (so
// bbolt's exclusive lock) from reading the version to the last step, so two
// upgraders cannot interleave; the second finds the file current and does
// nothing. A file newer than this kcache is index.ErrSchemaTooNew.
//
// The caller keeps other kcache maintenance (doctor's rebuild and
// compaction, which replace the file) out with the cache-wide lock.
func Upgrade(path string, timeout time.Duration) (*Result, error) {
	start := time.Now()
	u, err := index.OpenUpgrade(path, timeout)
	if err != nil {
		return nil, err
	}
	defer u.Close()
	v, err := u.Version()
	if err != nil {
		return nil, err
	}
	res := &Result{From: v, To: v}
	for v < index.SchemaVersion {
		step, err := stepFrom(v)
		if err != nil {
			return res, fmt.Errorf("upgrade %s: %w", path, err)
		}
		bak := BackupPath(path, v)
		if err := u.Backup(bak); err != nil {
			return res, fmt.Errorf("upgrade %s from schema %d: %w", path, v, err)
		}
		res.Backups = append(res.Backups, bak)
		failpoint.Hit(failpoint.UpgradeAfterBackup)
		if err := u.Step(v, step.Apply); err != nil {
			return res, err
		}
		v++
		res.To = v
	}
	res.Took = time.Since(start)
	return res, nil
}

func stepFrom(v uint32) (Step, error) {
	for _, s := range Steps {
		if s.From == v {
			return s, nil
		}
	}
	return Step{}, fmt.Errorf("no upgrade step from schema %d (this kcache upgrades from %d): %w", v, Steps[0].From, os.ErrNotExist)
}
