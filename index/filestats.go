package index

// FileStats describes the index file itself, for `kcache stats`.
type FileStats struct {
	PageSize  int // bytes per page
	FreePages int // pages on the freelist, reusable without growing the file
}

// FileStats reads the page size and the freelist of the open file. bbolt
// loads the freelist of a read-only file lazily, so this reads the freelist
// page when it has not been read yet (the file is never written).
func (d *DB) FileStats() (st FileStats, err error) {
	defer recoverCorrupt(d.path, &err)
	st.PageSize = d.bolt.Info().PageSize
	st.FreePages = d.bolt.Stats().FreePageN
	return st, nil
}

// OpenForStats opens the index read-only with its freelist loaded, so that
// FileStats can count free pages. A missing file is ErrNoIndex.
func OpenForStats(path string, opt Options) (*DB, error) {
	opt.ReadOnly, opt.loadFreelist = true, true
	return Open(path, opt)
}
