package server_test

import (
	"context"
	"encoding/json"
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
	url := s.URL() + server.OperatorSnapshotPath

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET %s: status %d, want 405", server.OperatorSnapshotPath, resp.StatusCode)
	}

	resp, err = http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Index uint64 `json:"index"`
		Bytes int64  `json:"bytes"`
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || got.Index == 0 || got.Bytes == 0 {
		t.Fatalf("POST %s: status %d, body %+v (%v), want 200 with an index and a size", server.OperatorSnapshotPath, resp.StatusCode, got, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin")); len(m) == 0 {
		t.Fatalf("no snapshot in %s after the request", dir)
	} else if fi, err := os.Stat(m[len(m)-1]); err != nil || fi.Size() == 0 {
		t.Fatalf("snapshot %s: %v, or empty", m[len(m)-1], err)
	}

}
