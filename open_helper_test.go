package kcache_test

import "github.com/kcache/kcache"

// mustOpen is kcache.Open for tests whose root is known good; a failure
// panics, which fails the test that called it.
func mustOpen(root string, opt *kcache.Options) *kcache.Cache {
	c, err := kcache.Open(root, opt)
	if err != nil {
		panic(err)
	}
	return c
}
