package lock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// LockedBy is the pid that took the lock when PID did not: PID holds
	// it through a descriptor it inherited (the command of a `run` whose
	// kcache was killed). /proc/locks names only the taker, which may be
	// gone; nil (JSON null, never omitted) when PID took the lock itself.
	LockedBy *int `json:"locked_by"`
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
		if h.LockedBy != nil {
			lines[i] += fmt.Sprintf(" (holds the lock pid %d took, through an inherited descriptor)", *h.LockedBy)
		}
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
	all, err := readProcLocks(needle)
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
//
// /proc/locks names the process that took a lock, but a flock lock belongs
// to the open file description and outlives that process when a child
// inherited the descriptor. So a taker that no longer has the lock open
// (it exited, or its pid was reused) is replaced by the processes whose
// descriptors hold it, found through /proc/PID/fdinfo (Holder.LockedBy
// names the taker); when none can be seen (another user's processes), the
// taker is reported as /proc/locks names it.
func ReadProcLocks() (map[string][]Holder, error) { return readProcLocks("") }

// readProcLocks is ReadProcLocks for the one lock named only (a LockID), or
// for all when only is "".
func readProcLocks(only string) (map[string][]Holder, error) {
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil, fmt.Errorf("read /proc/locks: %w", err)
	}
	var recs []flockRecord
	seen := map[flockRecord]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		r, ok := parseFlockLine(strings.Fields(sc.Text()))
		if !ok || seen[r] || (only != "" && r.id != only) {
			continue
		}
		seen[r] = true
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var orphans []flockRecord
	for _, r := range recs {
		if !pidHolds(r.pid, r) {
			orphans = append(orphans, r)
		}
	}
	inheritors := findInheritors(orphans)
	out := map[string][]Holder{}
	listed := map[string]bool{}
	add := func(id string, h Holder) {
		k := id + "/" + strconv.Itoa(h.PID)
		if listed[k] {
			return
		}
		listed[k] = true
		out[id] = append(out[id], h)
	}
	for _, r := range recs {
		if pids := inheritors[r]; len(pids) > 0 {
			for _, p := range pids {
				taker := r.pid
				add(r.id, Holder{PID: p, Mode: r.mode(), Cmdline: cmdline(p), LockedBy: &taker})
			}
			continue
		}
		h := Holder{PID: r.pid, Mode: r.mode(), Cmdline: cmdline(r.pid)}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.pid)); errors.Is(err, os.ErrNotExist) {
			h.Cmdline = "<exited; a process that inherited its descriptor holds the lock>"
		}
		add(r.id, h)
	}
	return out, nil
}

// flockRecord is one FLOCK lock as /proc/locks and fdinfo print it.
type flockRecord struct {
	id    string // LockID
	pid   int    // the process that took the lock
	write bool   // exclusive
}

// inode returns the inode number at the end of the LockID.
func (r flockRecord) inode() (uint64, bool) {
	i := strings.LastIndexByte(r.id, ':')
	if i < 0 {
		return 0, false
	}
	ino, err := strconv.ParseUint(r.id[i+1:], 10, 64)
	return ino, err == nil && ino != 0
}

func (r flockRecord) mode() string {
	if r.write {
		return "exclusive"
	}
	return "shared"
}

// parseFlockLine parses the fields of a /proc/locks line, or of an fdinfo
// "lock:" line without that word: "1: FLOCK ADVISORY READ 1234 fe:00:56 0 EOF".
func parseFlockLine(f []string) (flockRecord, bool) {
	if len(f) < 6 || f[1] != "FLOCK" {
		return flockRecord{}, false
	}
	pid, err := strconv.Atoi(f[4])
	if err != nil || pid <= 0 {
		return flockRecord{}, false
	}
	return flockRecord{id: f[5], pid: pid, write: f[3] == "WRITE"}, true
}

// fdLocks returns the flock locks that /proc/PID/fdinfo/FD shows on that
// descriptor's open file description.
func fdLocks(pid int, fd string) []flockRecord {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return nil
	}
	var out []flockRecord
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "lock:")
		if !ok {
			continue
		}
		if r, ok := parseFlockLine(strings.Fields(rest)); ok {
			out = append(out, r)
		}
	}
	return out
}

// pidHolds reports whether process pid has a descriptor holding lock r.
func pidHolds(pid int, r flockRecord) bool {
	ino, ok := r.inode()
	if !ok {
		return false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if fdInode(pid, fd.Name()) == ino && slices.Contains(fdLocks(pid, fd.Name()), r) {
			return true
		}
	}
	return false
}

// fdInode returns the inode number of the file open as /proc/PID/fd/FD, or
// 0 when it cannot be read.
func fdInode(pid int, fd string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(fmt.Sprintf("/proc/%d/fd/%s", pid, fd), &st) != nil {
		return 0
	}
	return st.Ino
}

// findInheritors scans every visible process's descriptors for the locks in
// recs and returns, per lock, the pids holding it. Only descriptors whose
// inode matches one of the locks are read in full, so the scan costs one
// stat per descriptor; it runs only when a taker no longer holds its lock.
func findInheritors(recs []flockRecord) map[flockRecord][]int {
	if len(recs) == 0 {
		return nil
	}
	want := map[flockRecord]bool{}
	inodes := map[uint64]bool{}
	for _, r := range recs {
		want[r] = true
		if ino, ok := r.inode(); ok {
			inodes[ino] = true
		}
	}
	out := map[flockRecord][]int{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // exited, or another user's process
		}
		for _, fd := range fds {
			if !inodes[fdInode(pid, fd.Name())] {
				continue
			}
			for _, r := range fdLocks(pid, fd.Name()) {
				if want[r] && !slices.Contains(out[r], pid) {
					out[r] = append(out[r], pid)
				}
			}
		}
	}
	return out
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
