package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/server"
)

// TestOperatorSnapshot: POST /v1/operator/snapshot writes a snapshot of
// what the node applied and answers its index and size; other methods are
// refused.
func TestOperatorSnapshot(t *testing.T) {
	dir := t.TempDir()
	s, err := server.New(testConfig(dir, &syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	c := client.New(s.URL())
	waitReady(t, c)
	if _, err := c.Issue(context.Background(), wire.IssueRequest{Kind: "access", Subject: "user:1"}); err != nil {
		t.Fatalf("issue: %v", err)
	}
	url := s.URL() + "/v1/operator/snapshot"

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET %s: status %d, want 405", "/v1/operator/snapshot", resp.StatusCode)
	}

	// Each answer names the snapshot it wrote: its index in the name of
	// its directory, its size that of its file.
	var last uint64
	for i := range 2 {
		if i > 0 {
			if _, err := c.Issue(context.Background(), wire.IssueRequest{Kind: "access", Subject: "user:2"}); err != nil {
				t.Fatalf("issue: %v", err)
			}
		}
		resp, err := http.Post(url, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Index uint64 `json:"index"`
			Bytes int64  `json:"bytes"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || got.Index <= last || got.Bytes == 0 {
			t.Fatalf("POST %s: status %d, body %+v (%v), want 200 with an index past %d and a size", "/v1/operator/snapshot", resp.StatusCode, got, err, last)
		}
		last = got.Index
		m, _ := filepath.Glob(filepath.Join(dir, "snapshots", fmt.Sprintf("*-%d-*", got.Index), "state.bin"))
		if len(m) != 1 {
			t.Fatalf("snapshot files of index %d: %v, want one", got.Index, m)
		}
		fi, err := os.Stat(m[0])
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != got.Bytes {
			t.Fatalf("snapshot %s of %d bytes; the answer says %d", m[0], fi.Size(), got.Bytes)
		}
	}
}

// TestPathsReachTheAPIAsSent: the profiles and the operator routes do not
// put a ServeMux in front of the API, which would answer a path that is
// not clean (as Envoy's authz checks send them) with a redirect.
func TestPathsReachTheAPIAsSent(t *testing.T) {
	for _, pprof := range []bool{false, true} {
		cfg := testConfig(t.TempDir(), &syncBuffer{})
		cfg.Pprof = pprof
		s, err := server.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() { s.Close() })
		waitReady(t, client.New(s.URL()))
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Get(s.URL() + "/v1/authz/envoy/a//b/../c")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			t.Fatalf("pprof %v: GET /v1/authz/envoy/a//b/../c answered %d (Location %q), not by the API", pprof, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}
