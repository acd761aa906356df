// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend on 127.0.0.1, one per test, in a temporary directory, stopped when
// the test ends. Objects are plain files under Dir, so a test can damage one
// the way a failing disk would.
//
// The binary is $KCACHE_VERSITYGW, else versitygw on $PATH, else
// /opt/kcache-tools/versitygw (where .ci/run installs it). Without it a test
// skips, except under CI=true, where it fails. KCACHE_TEST_S3=http://HOST:PORT
// uses an already running server instead (credentials from AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY); tests that need the server's disk then skip.
package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache/remote/s3"
)

// Server is a running S3 endpoint with one bucket made for the test.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Bucket    string
	// Dir is the posix backend's root (objects are Dir/BUCKET/NAME); ""
	// for an external server.
	Dir string
	cmd *exec.Cmd
}

var bucketSeq atomic.Int64

// Binary returns the versitygw binary to run, or "".
func Binary() string {
	if p := os.Getenv("KCACHE_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if _, err := os.Stat("/opt/kcache-tools/versitygw"); err == nil {
		return "/opt/kcache-tools/versitygw"
	}
	return ""
}

// Available reports whether Start would run a server rather than skip: a
// server is configured or installed, or CI requires one (then Start fails
// loudly if it is missing).
func Available() bool {
	return os.Getenv("KCACHE_TEST_S3") != "" || Binary() != "" || os.Getenv("CI") == "true"
}

// Start returns a server with a fresh, empty bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	bucket := fmt.Sprintf("kcache-test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	if ep := os.Getenv("KCACHE_TEST_S3"); ep != "" {
		s := &Server{Endpoint: ep, AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), Bucket: bucket}
		s.makeBucket(t)
		return s
	}
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("versitygw not found (KCACHE_VERSITYGW, PATH, /opt/kcache-tools); .ci/run installs it")
		}
		t.Skip("versitygw not installed: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
	dir := t.TempDir()
	s := &Server{AccessKey: "kcachetest", SecretKey: "kcachetestsecret", Bucket: bucket, Dir: dir}
	// Bind-and-release to find a free port; versitygw binds it right after.
	// A lost race shows up as the readiness wait failing, with the log.
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		s.Endpoint = "http://" + port
		logf, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
		if err != nil {
			t.Fatal(err)
		}
		s.cmd = exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey,
			"--port", port, "--quiet", "posix", dir)
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start versitygw: %v", err)
		}
		if s.waitReady() {
			logf.Close()
			break
		}
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		logf.Close()
		if attempt == 2 {
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not answer on %s:\n%s", port, out)
		}
	}
	t.Cleanup(s.Stop)
	s.makeBucket(t)
	return s
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *Server) waitReady() bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
}

// Stop kills the server (it keeps no state worth a clean shutdown).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *Server) makeBucket(t testing.TB) {
	t.Helper()
	r, err := s3.Open(s.Config(""))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.MakeBucket(ctx); err != nil {
		t.Fatal(err)
	}
}

// URL returns s3://BUCKET/PREFIX (or s3://BUCKET).
func (s *Server) URL(prefix string) string {
	return strings.TrimSuffix("s3://"+s.Bucket+"/"+prefix, "/")
}

// Config returns a client configuration for the bucket under prefix.
func (s *Server) Config(prefix string) s3.Config {
	return s3.Config{URL: s.URL(prefix), Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey, Region: "us-east-1"}
}

// Env returns the environment a kcache process needs to use the bucket
// under prefix, the way a user configures it.
func (s *Server) Env(prefix string) []string {
	return []string{
		"KCACHE_REMOTE=" + s.URL(prefix),
		"AWS_ENDPOINT_URL=" + s.Endpoint,
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1",
	}
}

// ObjectPath returns where the posix backend keeps an object on disk.
func (s *Server) ObjectPath(t testing.TB, prefix, name string) string {
	t.Helper()
	if s.Dir == "" {
		t.Skip("KCACHE_TEST_S3 names an external server; its disk is out of reach")
	}
	return filepath.Join(s.Dir, s.Bucket, prefix, name)
}
