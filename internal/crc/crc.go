// Package crc computes the CRC-32 hashes ktstr records (config_hash,
// kconfig_hash): IEEE CRC-32 as 8 lowercase hex digits. Shared by the
// library and the CLI; not part of the API.
package crc

import (
	"fmt"
	"hash/crc32"
	"os"
)

// Hex returns the CRC-32 (IEEE) of data as ktstr writes it: 8 lowercase
// hex digits. It is the hash of config_hash and kconfig_hash.
func Hex(data []byte) string { return fmt.Sprintf("%08x", crc32.ChecksumIEEE(data)) }

// File is Hex of a file's contents.
func File(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return Hex(data), nil
}
