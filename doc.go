// Package kcache is a cache of built Linux kernels: boot images and their
// vmlinux, stored once and looked up many times by test harnesses, often by
// many processes at once.
//
// A cache root holds a bbolt index beside a content-addressed blob directory:
//
//	<root>/
//	  index.db                 the index (package index; its doc has the bucket tree)
//	  .kcache-root             marker: this directory is a kcache root (Doctor
//	                           repairs nothing elsewhere)
//	  blobs/sha256/<2>/<64>    immutable content: images, vmlinux files and
//	                           entry manifests (package blobstore)
//	  .locks/<key>.lock        one flock target per entry key; never deleted
//	  .locks/.index.lock       held by index rebuilds, compactions and upgrades
//	  .tmp/<id>/, <id>.lock    a writer's staging directory and the lock it
//	                           holds while alive
//	  .stats/hits, misses      lookup counters: one byte appended per hit or miss
//	  quarantine/              what Verify and Doctor moved aside instead of
//	                           deleting
//	  index.db.bak             the previous index, after a rebuild
//	  index.db.v<N>.bak        the index as it was before an upgrade from schema N
//
// Nothing below the root is reached through a symlink (package
// internal/beneath): kcache never creates one there, so one is someone
// else's, and following it could make a write or delete land outside the
// cache.
//
// This package owns the protocols — the order of writes and which locks are
// held when — and nothing else. The one write path is Store: validate, take
// the entry's exclusive lock, stage and ingest every blob (fsynced and renamed
// into place), then commit one index transaction that points the key at them.
// A crash at any step leaves either the old state or unreferenced files that
// a sweep recognises; never a record pointing at missing or partial bytes.
//
// The index is opened per operation and closed right after (bbolt holds an
// flock on the file while it is open), so a harness that holds an entry for
// minutes holds only the entry's shared lock (Hold), not the index.
// An index written by an older kcache is upgraded (package migrate, after a
// backup copy index.db.v<N>.bak) by the first open of a cache that may
// write, for reading or writing alike, so the upgrade never waits for a
// write on a hot path; a cache opened with Options.ReadOnly never writes,
// so it reads an older index as it is (every schema so far is readable).
//
// Every deletion (Remove, Clean, GC) goes through one protocol: take each
// entry's exclusive lock without waiting (entries in use are skipped and
// reported), delete the records in one transaction, which marks blobs whose
// reference count reached zero as dying, then unlink them with the index
// closed and forget them in a second short transaction. The first design had the
// unlink inside the transaction's lock; moving it out keeps a large gc from
// blocking every other process for the duration of thousands of unlinks, and
// the dying mark keeps a concurrent store from adopting a blob that is about
// to vanish. Sweep removes what crashes leave behind (dead writers' staging
// directories, unreferenced blobs past a grace period, abandoned dying
// blobs), and never the manifests of a lost index, which doctor
// --rebuild-index needs.
//
// The shared tier (Push, Pull, LookupRemote, ListRemote) talks to any
// remote.Remote; package remote documents the object layout and remote/s3
// implements it on S3. It keeps the local protocols: Push reads blobs opened
// inside a read transaction and writes the manifest object last; Pull stages
// and digest-checks every blob before it is renamed into blobs/, then takes
// the key's exclusive lock only for the install (manifest blob and one
// transaction), so a slow download never holds up harnesses using the key.
// This package imports only the interface; the S3 client is linked into the
// kcache-remote helper, not into every kcache process (cmd/kcache explains).
//
// Blob paths returned by Lookup stay valid until the entry is replaced or
// removed. A reader that must not race a replacement either holds the shared
// lock while it reads or opens the files with OpenEntry, which retries when a
// replacement removed a blob between the lookup and the open.
//
// # Concurrency
//
// A *Cache is safe for concurrent use by multiple goroutines, and any
// number of processes may use one cache root at once: entries are guarded
// by flock(2) locks on their lock files (Hold takes one shared; Store,
// Remove, Clean and GC take one exclusive), and the index by bbolt's own
// file lock, held only for one transaction at a time. Calls that can block
// are those that wait for a lock: Hold and Store wait for an entry's lock
// (HoldOptions.Timeout, Options.StoreLockTimeout, and ctx), every call that
// opens the index waits up to Options.IndexTimeout for a writer; Remove,
// Clean and GC never wait for an entry (one in use is skipped and
// reported). Errors for a wait that ran out name the processes holding the
// lock.
//
// Every *Cache method that opens the index, takes or waits for a lock, or
// reads blobs takes a context.Context first; only the path accessors (Root,
// IndexPath, LockPath, BlobPath) take none. A done context ends lock and
// index waits, blob copies and hashes (checked every 32 KiB), strip and
// every retry, with an error matching ctx.Err(); a cancelled Store removes
// its staging directory. Work that follows a committed removal (unlinking
// and forgetting released blobs) is finished regardless.
//
// Options for an operation come as one struct passed by value, each default
// stated on its field; where zero is a meaningful value, "not set" is an
// explicit field (LockOptions.NoWait, GCOptions.NoGrace). Options.Now is the
// one clock of every recorded or compared time.
package kcache
