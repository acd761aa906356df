// Package index is kcache's bbolt schema: which buckets exist, what their keys
// and values are, and the few read and write operations the cache needs. It
// knows nothing about files; blob digests are opaque strings to it.
//
// # Bucket tree
//
//	meta/
//	    schema_version   -> uint32, big endian (SchemaVersion)
//	    created_at       -> RFC 3339 UTC timestamp of the index's creation
//	    kconfig_hash     -> the current kconfig hash (8 lowercase hex); absent when unset
//	entries/
//	    <cache key>      -> msgpack Record (map encoding, a tag on every field);
//	                        its optional "corrupt" CorruptMark is written by
//	                        verify/doctor (MarkCorrupt) and dropped by the next Put
//	by_time/
//	    <built_at> 0x00 <cache key> -> empty
//	                        built_at is the fixed-width 20-byte UTC string, so byte order
//	                        is time order; a reverse cursor yields newest first without
//	                        decoding any record (Tx.Newest)
//	blobs/
//	    <64 hex sha256>  -> msgpack BlobRef {size, refs, dying, ctime}: how many entries
//	                        reference the blob (image, vmlinux and manifest each count
//	                        once); dying is the time refs reached zero, until the
//	                        remover has unlinked the file and Forgets the record;
//	                        ctime (optional, int64 unix ns) is the blob file's inode
//	                        change time when kcache last wrote or hashed it — a file
//	                        whose ctime differs is hashed before it is trusted
//	pins/
//	    <cache key>      -> msgpack Pin {pinned_at, reason}
//	stats/               (since schema 2; schema 1 created it on first use)
//	    <counter name>   -> int64, big endian (StatEvictions, StatLastGC, ...)
//	removed/             (created by the first Delete; absent means nothing removed)
//	    <cache key>      -> msgpack Tombstone {removed_at, manifest}: the key's last
//	                        removal (RFC 3339 UTC, nanoseconds) and the manifest it
//	                        removed; a Put of a record stored after removed_at
//	                        drops it, so only keys that are removed now have one
//
// # Rules
//
//   - Values are small: no blob bytes live in bbolt.
//   - Every record is also written to the blob directory as a manifest
//     (EncodeManifest), so the index is a view that can be rebuilt from disk.
//   - Refcounts change only inside Put and Delete, in the same transaction as
//     the record they belong to. A blob whose count reaches zero is marked
//     dying and returned to the caller, which unlinks its file after the
//     commit — outside the index lock, so a large removal holds the lock only
//     for its bookkeeping — and then Forgets it in a second short transaction.
//     Put refuses dying blobs (ErrBlobDying): a writer cannot adopt a file that
//     is about to be unlinked. A dying mark older than DyingAbandonAfter
//     belongs to a remover that died, and Put takes the blob over.
//   - A removal is final. Delete writes the key's Tombstone in the removal's
//     own transaction, and its manifest blob is released (and unlinked) with
//     the entry's other blobs. A manifest can still outlive its entry — a
//     store killed after writing it and before its commit, a remover killed
//     between its commit and its unlinks — and doctor's repairs (restoring
//     lost entries, rebuilding the index) skip every manifest whose stored_at
//     is not after the key's tombstone (Tombstone.Covers). The one case
//     tombstones cannot cover is an index that is lost altogether (deleted,
//     or unreadable when rebuilt): its tombstones are gone with it, and a
//     rebuild then restores a removed key if a leftover manifest of the key
//     is still on disk: one of a store of the key killed or failed after
//     writing it and not yet swept (the sweep removes an unreferenced blob
//     once it is an hour old), or the removed manifest itself when the
//     remover was killed before unlinking it and the index was lost before
//     a sweep finished the removal.
//   - A schema newer than SchemaVersion is refused (ErrSchemaTooNew; the
//     message names both versions and says to upgrade kcache).
//
// # Schema versions
//
// Open returns a *SchemaOldError (ErrSchemaOld) for a file of an older
// schema: this package only reads and writes its own. The upgrade lives in
// package migrate, which this package does not import; it works through
// OpenUpgrade, an Upgrader that opens the file without checking its schema
// and offers a byte-exact Backup and Step, which runs one upgrade step and
// bumps the version in one transaction (and refuses to commit unless every
// bucket of the new version exists). The root package calls migrate on any
// open of a cache that may write; a read-only open that asks for it
// (Options.ReadOld) reads files down to MinReadSchema as they are, because
// every bucket a reader uses has kept its shape since then.
//
// # Opening
//
// bbolt holds an flock(2) on the file for as long as it is open: exclusive for
// read-write, shared for read-only, and a read-only open waits for a writer.
// So callers open per operation and close right after, always with a timeout;
// a timeout is ErrBusy and the caller names the holders. Walking paths turn a
// memory fault (truncated file) or a bbolt panic (damaged page) into ErrCorrupt.
//
// Not here, deliberately: an "ingests" bucket. A writer's staging directory is
// guarded by a lock file it holds while alive, and a crashed writer is
// recognised by taking that lock; an index record would cost a second
// read-write transaction per store and would itself be stale after a crash.
package index
