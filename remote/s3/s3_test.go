package s3_test

import (
	"strings"
	"testing"

	"github.com/kcache/kcache/remote/s3"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		in, bucket, prefix, err string
	}{
		{"s3://kernels", "kernels", "", ""},
		{"s3://kernels/", "kernels", "", ""},
		{"s3://kernels/ci/x86_64", "kernels", "ci/x86_64", ""},
		{"s3://kernels/ci/x86_64/", "kernels", "ci/x86_64", ""},
		{"kernels/ci", "", "", "want s3://BUCKET/PREFIX"},
		{"https://kernels/ci", "", "", "want s3://BUCKET/PREFIX"},
		{"s3://", "", "", "bucket"},
		{"s3://ab/x", "", "", "shorter than 3"},
		{"s3://bad..bucket/x", "", "", "bucket"},
		{"s3://kernels/a//b", "", "", "empty, . or .."},
		{"s3://kernels/a/../b", "", "", "empty, . or .."},
		{"s3://kernels/./b", "", "", "empty, . or .."},
		{"s3://kernels/a\nb", "", "", "control character"},
	} {
		b, p, err := s3.ParseURL(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one mentioning %q", c.in, err, c.err)
		case c.err == "" && (b != c.bucket || p != c.prefix):
			t.Errorf("%q = %q, %q; want %q, %q", c.in, b, p, c.bucket, c.prefix)
		}
	}
}

func TestOpenEndpoints(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	for _, c := range []struct {
		endpoint string
		insecure bool
		want     string // Endpoint(), or an error fragment after "error: "
	}{
		{"", false, "https://s3.amazonaws.com"},
		{"127.0.0.1:7070", true, "http://127.0.0.1:7070"},
		{"127.0.0.1:7070", false, "https://127.0.0.1:7070"},
		{"http://127.0.0.1:7070", false, "http://127.0.0.1:7070"},
		{"https://minio.example.com", false, "https://minio.example.com"},
		{"http://127.0.0.1:7070/path", false, "error: want host[:port]"},
		{"ftp://host", false, "error: want host[:port]"},
	} {
		r, err := s3.Open(s3.Config{URL: "s3://kernels/ci", Endpoint: c.endpoint, Insecure: c.insecure})
		if frag, isErr := strings.CutPrefix(c.want, "error: "); isErr {
			if err == nil || !strings.Contains(err.Error(), frag) {
				t.Errorf("%q: %v, want an error mentioning %q", c.endpoint, err, frag)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.endpoint, err)
			continue
		}
		if r.Endpoint() != c.want || r.String() != "s3://kernels/ci" {
			t.Errorf("%q: endpoint %s, url %s; want %s", c.endpoint, r.Endpoint(), r, c.want)
		}
	}
	// The environment names the endpoint when the flag does not.
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
	if r, err := s3.Open(s3.Config{URL: "s3://kernels"}); err != nil || r.Endpoint() != "http://127.0.0.1:9000" {
		t.Errorf("AWS_ENDPOINT_URL: %v", err)
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
	if r, err := s3.Open(s3.Config{URL: "s3://kernels"}); err != nil || r.Endpoint() != "http://127.0.0.1:9001" {
		t.Errorf("AWS_ENDPOINT_URL_S3 takes precedence: %v", err)
	}
}
