package lock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

// Holder is a process that holds a flock(2) lock on a file.
type Holder struct {
	PID     int    `json:"pid"`
	Mode    string `json:"mode"` // "shared" or "exclusive"
	Cmdline string `json:"cmdline"`
}

// maxCmdline is how many characters of a holder's command line are shown.
const maxCmdline = 100

// FormatHolders renders holders one per line with a two-space indent, or
// "  <none recorded>" when the list is empty.
func FormatHolders(hs []Holder) string {
	if len(hs) == 0 {
		return "  <none recorded>"
	}
	lines := make([]string, len(hs))
	for i, h := range hs {
		lines[i] = fmt.Sprintf("  pid=%d mode=%s cmd=%s", h.PID, h.Mode, h.Cmdline)
	}
	return strings.Join(lines, "\n")
}

// Holders lists the processes holding a flock(2) lock on path, in the order
// /proc/locks lists them, each pid once. A missing file has no holders.
func Holders(path string) ([]Holder, error) {
	needle, err := LockID(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	all, err := ReadProcLocks()
	if err != nil {
		return nil, err
	}
	return all[needle], nil
}

// LockID returns the "MAJ:MIN:INODE" string under which /proc/locks names the
// file. The device comes from /proc/self/mountinfo, not stat's st_dev, because
// btrfs, overlayfs and bind mounts report an anonymous st_dev that /proc/locks
// never shows.
func LockID(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", &os.PathError{Op: "stat", Path: path, Err: err}
	}
	dev, err := mountDevice(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:%d", dev, st.Ino), nil
}

// mountDevice finds the mount covering path and returns its device as
// /proc/locks prints it: two-digit lowercase hex major and minor.
func mountDevice(path string) (string, error) {
	canon, err := filepath.EvalSymlinks(path)
	if err != nil {
		canon = path
	}
	canon, _ = filepath.Abs(canon)
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo (is /proc mounted?): %w", err)
	}
	best, bestLen := "", -1
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		maj, mnr, ok := strings.Cut(f[2], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(mnr, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		mp := unescapeMount(f[4])
		if covers(mp, canon) && len(mp) > bestLen {
			best, bestLen = fmt.Sprintf("%02x:%02x", ma, mi), len(mp)
		}
	}
	if bestLen < 0 {
		return "", fmt.Errorf("no mountinfo entry covers %s (is /proc mounted?)", canon)
	}
	return best, nil
}

// covers reports whether mount point mp is a component-wise prefix of p.
func covers(mp, p string) bool {
	if mp == "/" || mp == p {
		return true
	}
	return strings.HasPrefix(p, mp) && p[len(mp)] == '/'
}

// unescapeMount decodes the \NNN octal escapes mountinfo uses for spaces,
// tabs, newlines and backslashes; anything else stays literal.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 16); err == nil && v <= 0o377 {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ReadProcLocks reads /proc/locks once and returns the FLOCK holders of every
// locked file, keyed by LockID. POSIX and OFD locks and blocked waiters
// ("->" lines) are not flock holders and are skipped, as are malformed lines.
func ReadProcLocks() (map[string][]Holder, error) {
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil, fmt.Errorf("read /proc/locks: %w", err)
	}
	out := map[string][]Holder{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid <= 0 {
			continue
		}
		id := f[5]
		if seen[id+"/"+f[4]] {
			continue
		}
		seen[id+"/"+f[4]] = true
		mode := "shared"
		if f[3] == "WRITE" {
			mode = "exclusive"
		}
		out[id] = append(out[id], Holder{PID: pid, Mode: mode, Cmdline: cmdline(pid)})
	}
	return out, sc.Err()
}

// cmdline returns a process's command line with NULs as spaces, cut to
// maxCmdline characters, or "<cmdline unavailable>".
func cmdline(pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "<cmdline unavailable>"
	}
	s := strings.TrimRight(strings.ReplaceAll(string(raw), "\x00", " "), " \t\n")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if s == "" {
		return "<cmdline unavailable>"
	}
	if r := []rune(s); len(r) > maxCmdline {
		s = string(r[:maxCmdline]) + "…"
	}
	return s
}
