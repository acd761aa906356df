// Package failpoint kills the process at a named point of a multi-step
// write, so that tests can check that a crash there leaves the cache
// consistent (cmd/kcache's crash matrix).
//
// A point is armed by the environment variable KCACHE_FAILPOINT, read once
// when the process starts: Hit(name) with that name sends the process
// SIGKILL, which no deferred function or signal handler survives, exactly
// like a power cut as far as the process is concerned. Unset, Hit is one
// compare of a package variable against "".
//
// Every name a call site uses is a constant here and listed in All, so the
// crash matrix can check that it has a case for each.
package failpoint

import (
	"os"
	"syscall"
	"time"
)

// Env is the environment variable that arms a failpoint.
const Env = "KCACHE_FAILPOINT"

// The failpoints, by the write they interrupt.
const (
	// Store (store.go): after the staging directory is created; after the
	// image, vmlinux and manifest blobs are renamed into blobs/; inside the
	// index transaction before it commits; before the staging directory is
	// removed (after the commit and the release of replaced blobs).
	StoreAfterStaging  = "store.after-staging"
	StoreAfterImage    = "store.after-image"
	StoreAfterVmlinux  = "store.after-vmlinux"
	StoreAfterManifest = "store.after-manifest"
	StoreBeforeCommit  = "store.before-commit"
	StoreBeforeUnstage = "store.before-staging-removal"
	// UpdateAfterCommit (cache.go release): an index transaction that
	// released blobs (store replacing an entry, rm, clean, gc) committed and
	// the index is closed; nothing is unlinked yet.
	UpdateAfterCommit = "update.after-commit"
	// ReleaseAfterFirstUnlink (cache.go release): the first released blob
	// is unlinked, the others are not, and none is forgotten.
	ReleaseAfterFirstUnlink = "release.after-first-unlink"
	// SweepAfterOrphanUnlink (sweep.go): an orphan blob is unlinked inside
	// the sweep's transaction, which has not committed.
	SweepAfterOrphanUnlink = "sweep.after-orphan-unlink"
	// MigrateBetweenEntries (migrate.go): one ktstr entry is imported, the
	// next is not.
	MigrateBetweenEntries = "migrate.between-entries"
	// RebuildBeforeSwap (doctor.go installIndex): the rebuilt index is
	// complete in its temporary file and the old one is linked to
	// index.db.bak; index.db is not replaced yet.
	RebuildBeforeSwap = "rebuild.before-swap"
	// UpgradeAfterBackup (migrate/schema.go): index.db.v<N>.bak is written,
	// the upgrade step has not run.
	UpgradeAfterBackup = "upgrade.after-backup"
	// Pull (pull.go): the first bytes of a downloaded blob are staged; every
	// blob is in blobs/ and the key's lock is not taken yet; inside the
	// index transaction that installs the entry, before it commits.
	PullMidBlob      = "pull.mid-blob"
	PullAfterBlobs   = "pull.after-blobs"
	PullBeforeCommit = "pull.before-commit"
	// PushAfterFirstBlob (push.go): one blob is uploaded, the others and
	// the manifest are not. It changes nothing local; the remote must show
	// no entry, and a re-run must upload only the rest.
	PushAfterFirstBlob = "push.after-first-blob"
)

// All lists every failpoint.
var All = []string{
	StoreAfterStaging, StoreAfterImage, StoreAfterVmlinux, StoreAfterManifest,
	StoreBeforeCommit, StoreBeforeUnstage, UpdateAfterCommit, ReleaseAfterFirstUnlink,
	SweepAfterOrphanUnlink, MigrateBetweenEntries, RebuildBeforeSwap, UpgradeAfterBackup,
	PullMidBlob, PullAfterBlobs, PullBeforeCommit, PushAfterFirstBlob,
}

var armed = os.Getenv(Env)

// Hit kills the process with SIGKILL when name is the armed failpoint.
func Hit(name string) {
	if armed == "" || armed != name {
		return
	}
	die()
}

func die() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for { // SIGKILL to oneself lands before kill(2) returns; never return anyway
		time.Sleep(time.Hour)
	}
}
