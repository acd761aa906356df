// Package units renders durations and byte counts the way kcache's
// reports and command line show them ("30d", "1.5GiB"). The library uses it
// for gc reasons, the CLI for its output; it is not part of the API.
package units

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration renders d as gc reasons show it: whole days as "30d",
// otherwise Go's form without zero minutes and seconds ("36h", "1h30m").
func Duration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Size renders a byte count with binary units and at most two
// decimals ("10GiB", "1.5GiB", "512B").
func Size(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + units[i]
}
