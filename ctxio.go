package kcache

import (
	"context"
	"io"
)

// ctxReader makes a long copy or hash cancellable: every Read (io.Copy asks
// for 32 KiB at a time) first checks ctx, so a cancelled Store of a large
// image stops within one chunk instead of after the whole file.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// ctxReaderAt is ctxReader for the ELF reader of strip, which reads the
// vmlinux section by section.
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (r ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.ReadAt(p, off)
}
