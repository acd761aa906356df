//go:build kcache_s3

package main

import (
	"github.com/kcache/kcache/remote"
	"github.com/kcache/kcache/remote/s3"
)

// This file is built into kcache-remote (go build -tags kcache_s3): the
// binary that carries the S3 client. See openS3.
func init() { openS3 = openS3Remote }

func openS3Remote(cfg remoteFlags) (remote.Remote, error) {
	return s3.Open(s3.Config{URL: cfg.url, Endpoint: cfg.endpoint, Insecure: cfg.insecure})
}
