// Package s3 is the remote tier on any S3-compatible object store (AWS S3,
// R2, Ceph RGW, MinIO, SeaweedFS, versitygw) through minio-go.
//
// A remote is named by a URL, s3://BUCKET/PREFIX; every object lives under
// PREFIX/ in BUCKET (see package remote for the layout). The endpoint, region
// and credentials come from the standard AWS environment variables unless
// Config sets them:
//
//	AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL   endpoint (default s3.amazonaws.com)
//	AWS_REGION, AWS_DEFAULT_REGION          region (default: asked of the server)
//	AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
//	AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE (~/.aws/credentials)
//
// No instance-metadata lookup is made: on a CI runner without a metadata
// service it would only add a timeout before every anonymous request.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/kcache/kcache/remote"
)

// Config says which remote to use and how to reach it.
type Config struct {
	// URL is s3://BUCKET or s3://BUCKET/PREFIX.
	URL string
	// Endpoint is host[:port] or http(s)://host[:port]; empty means the
	// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL variables, else AWS.
	Endpoint string
	// Insecure speaks plain HTTP (a server on loopback); so does an endpoint
	// given as http://.
	Insecure bool
	// Region; empty means AWS_REGION / AWS_DEFAULT_REGION, else the
	// server's answer.
	Region string
	// AccessKey and SecretKey, when set, replace the credential chain.
	AccessKey, SecretKey, SessionToken string
	// Retries is how many times a failed request is tried again (0: 3).
	Retries int
	// DialTimeout bounds connecting to the endpoint (0: 10 s).
	DialTimeout time.Duration
}

// Remote is an S3 bucket prefix. It implements remote.Remote.
type Remote struct {
	client *minio.Client
	bucket string
	prefix string // "" or "dir/sub/", always ending in "/" when set
	url    string
	// bucketSeen is set once the bucket is known to exist (notFound).
	bucketSeen atomic.Bool
}

var _ remote.Remote = (*Remote)(nil)

// ParseURL splits s3://BUCKET/PREFIX into bucket and prefix (without the
// trailing slash), refusing anything that is not a plain object-name prefix.
func ParseURL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("remote %q: want s3://BUCKET/PREFIX", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return "", "", fmt.Errorf("remote %q: bucket %q: %v", s, bucket, err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		for _, part := range strings.Split(prefix, "/") {
			if part == "" || part == "." || part == ".." {
				return "", "", fmt.Errorf("remote %q: prefix %q has an empty, . or .. component", s, prefix)
			}
		}
		if strings.ContainsAny(prefix, "\x00\n\r\\") {
			return "", "", fmt.Errorf("remote %q: prefix contains a control character or backslash", s)
		}
	}
	return bucket, prefix, nil
}

// Open returns the remote cfg names. It makes no request: a wrong endpoint or
// credential shows up on the first operation.
func Open(cfg Config) (*Remote, error) {
	bucket, prefix, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = firstEnv("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	secure := !cfg.Insecure
	switch {
	case endpoint == "":
		endpoint = "s3.amazonaws.com"
	case strings.Contains(endpoint, "://"):
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("remote endpoint %q: want host[:port] or http(s)://host[:port]", endpoint)
		}
		endpoint = u.Host
		if u.Scheme == "http" {
			secure = false
		}
	}
	region := cfg.Region
	if region == "" {
		region = firstEnv("AWS_REGION", "AWS_DEFAULT_REGION")
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
		})
	}
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", cfg.URL, err)
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout == 0 {
		dialTimeout = 10 * time.Second
	}
	transport.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	retries := cfg.Retries
	if retries == 0 {
		retries = 3
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds: creds, Secure: secure, Region: region, Transport: transport,
		MaxRetries: retries + 1, // minio counts the first try
	})
	if err != nil {
		return nil, fmt.Errorf("remote %s: endpoint %s: %w", cfg.URL, endpoint, err)
	}
	r := &Remote{client: client, bucket: bucket, url: "s3://" + bucket}
	if prefix != "" {
		r.prefix = prefix + "/"
		r.url += "/" + prefix
	}
	return r, nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// String returns the remote's URL.
func (r *Remote) String() string { return r.url }

// Endpoint returns the server the remote talks to (scheme://host:port).
func (r *Remote) Endpoint() string { return r.client.EndpointURL().String() }

func (r *Remote) object(name string) string { return r.prefix + name }

// describe names an object as the user would find it: s3://bucket/prefix/name.
func (r *Remote) describe(name string) string { return r.url + "/" + name }

// fail turns a client error into one that names the operation, the object
// and the server's own words, and matches remote.ErrNotFound for a missing
// object.
func (r *Remote) fail(op, name string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || (resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket" && name != ""):
		return fmt.Errorf("%s %s: %w", op, r.describe(name), remote.ErrNotFound)
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("%s %s: %w (server: %s)", op, r.describe(name), r.noBucket(), resp.Message)
	case resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return fmt.Errorf("%s %s: %s: %s (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile in ~/.aws/credentials)", op, r.describe(name), resp.Code, resp.Message)
	case resp.Code != "":
		return fmt.Errorf("%s %s: %s: %s", op, r.describe(name), resp.Code, resp.Message)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // the URL repeats the object, which we name already
	}
	return fmt.Errorf("%s %s (endpoint %s): %w; check that the server is up and that the endpoint (AWS_ENDPOINT_URL) names it", op, r.describe(name), r.Endpoint(), err)
}

// noBucket is the error for a bucket the endpoint does not have.
func (r *Remote) noBucket() error {
	return fmt.Errorf("bucket %q does not exist at %s; create it, or fix the bucket in the remote URL", r.bucket, r.Endpoint())
}

// notFound tells a missing object from a missing bucket: a HEAD answer has
// no body, so both arrive as a bare 404 that minio-go calls NoSuchKey. It
// asks once whether the bucket exists and remembers a yes.
func (r *Remote) notFound(ctx context.Context, op, name string, err error) error {
	err = r.fail(op, name, err)
	if !errors.Is(err, remote.ErrNotFound) || r.bucketSeen.Load() {
		return err
	}
	ok, berr := r.client.BucketExists(ctx, r.bucket)
	switch {
	case berr != nil:
		return r.fail(op, name, berr)
	case !ok:
		return fmt.Errorf("%s %s: %w", op, r.describe(name), r.noBucket())
	}
	r.bucketSeen.Store(true)
	return err
}

// Stat implements remote.Remote.
func (r *Remote) Stat(ctx context.Context, name string) (remote.Object, error) {
	info, err := r.client.StatObject(ctx, r.bucket, r.object(name), minio.StatObjectOptions{})
	if err != nil {
		return remote.Object{}, r.notFound(ctx, "stat", name, err)
	}
	return remote.Object{Name: name, Size: info.Size, Modified: info.LastModified}, nil
}

// Get implements remote.Remote.
func (r *Remote) Get(ctx context.Context, name string) (io.ReadCloser, remote.Object, error) {
	obj, err := r.client.GetObject(ctx, r.bucket, r.object(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, remote.Object{}, r.fail("get", name, err)
	}
	info, err := obj.Stat() // the request is made lazily; make it now
	if err != nil {
		obj.Close()
		return nil, remote.Object{}, r.notFound(ctx, "get", name, err)
	}
	return &reader{obj: obj, r: r, name: name}, remote.Object{Name: name, Size: info.Size, Modified: info.LastModified}, nil
}

// reader names the object in errors that happen mid-transfer.
type reader struct {
	obj  *minio.Object
	r    *Remote
	name string
}

func (rd *reader) Read(p []byte) (int, error) {
	n, err := rd.obj.Read(p)
	if err != nil && err != io.EOF {
		err = rd.r.fail("get", rd.name, err)
	}
	return n, err
}

func (rd *reader) Close() error { return rd.obj.Close() }

// Put implements remote.Remote. Objects above minio-go's part size go up as
// a multipart upload, which the server makes visible only when complete.
//
// The payload is not hashed into the request signature (UNSIGNED-PAYLOAD,
// which minio-go already uses over TLS): kcache checks every blob's sha256
// before it is sent and again after every download, end to end, so signing
// it would only hash each byte once more.
func (r *Remote) Put(ctx context.Context, name string, body io.Reader, size int64) error {
	_, err := r.client.PutObject(ctx, r.bucket, r.object(name), body, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
	if err != nil {
		return r.fail("put", name, err)
	}
	return nil
}

// List implements remote.Remote.
func (r *Remote) List(ctx context.Context, prefix string, fn func(remote.Object) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine when fn returns early
	for info := range r.client.ListObjects(ctx, r.bucket, minio.ListObjectsOptions{Prefix: r.object(prefix), Recursive: true}) {
		if info.Err != nil {
			return r.fail("list", prefix, info.Err)
		}
		name := strings.TrimPrefix(info.Key, r.prefix)
		if path.Clean(name) != name { // a foreign object such as "a//b"; not ours
			continue
		}
		if err := fn(remote.Object{Name: name, Size: info.Size, Modified: info.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

// MakeBucket creates the remote's bucket (tests and first-time setup).
func (r *Remote) MakeBucket(ctx context.Context) error {
	if err := r.client.MakeBucket(ctx, r.bucket, minio.MakeBucketOptions{}); err != nil {
		return r.fail("make bucket", "", err)
	}
	return nil
}
