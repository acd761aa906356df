package main

import (
	"errors"
	"fmt"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// errText is how the CLI shows an error: the library's message, which
// carries only data, followed by what to do about it on the command line.
// This is the one place that knows those hints, keyed by error type.
func errText(err error) string {
	if h := hint(err); h != "" {
		return err.Error() + "; " + h
	}
	return err.Error()
}

// hint returns the command-line advice for err's type, or "".
func hint(err error) string {
	var (
		nf  *kcache.NotFoundError
		ce  *kcache.CorruptError
		pe  *kcache.PinnedError
		ice *kcache.IndexCorruptError
	)
	switch {
	case errors.As(err, &ice):
		return fmt.Sprintf("run `kcache doctor --rebuild-index` to rebuild %s from the entry manifests in the blob directory (the damaged file is kept as index.db.bak)", ice.Path)
	case errors.Is(err, index.ErrSchemaOld) && errors.Is(err, kcache.ErrReadOnly):
		return "run any kcache command that writes (or `kcache doctor`) without --read-only once"
	case errors.Is(err, kcache.ErrReadOnly):
		return "run it without --read-only"
	case errors.As(err, &pe):
		return fmt.Sprintf("`kcache rm --force %s` removes it anyway, `kcache unpin %s` releases the pin", pe.Key, pe.Key)
	case errors.As(err, &ce):
		return fmt.Sprintf("remove it with `kcache rm %s` and store it again", ce.Key)
	case errors.As(err, &nf):
		if nf.BuildID != "" {
			return "`kcache list --json` shows the build_id of each"
		}
		return "`kcache list` shows what is cached"
	}
	return ""
}
