package api

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/nonce"
	"github.com/tokenstore/tokenstore/token"
)

// benchNode is a Node of one map, for the per-request cost of the
// handlers with no Raft under them.
type benchNode struct {
	byHash map[string]*fsm.Record
}

// Apply answers an issue with its record and a consume with the record
// of the token it consumed, as the state machine would, and refuses the
// rest.
func (n *benchNode) Apply(_ context.Context, c fsm.Command) (fsm.Result, uint64, error) {
	switch c := c.(type) {
	case *fsm.Issue:
		rec := c.Record
		rec.CreatedAt = time.Now().UnixNano()
		rec.ExpiresAt = rec.CreatedAt + int64(time.Hour)
		rec.CreateIndex, rec.ModifyIndex = 8, 8
		return fsm.Result{Record: &rec}, 8, nil
	case *fsm.Consume:
		if rec := n.byHash[c.Hash]; rec != nil {
			used := *rec
			used.State, used.LastUsedAt, used.UsesLeft, used.ModifyIndex = fsm.Consumed, time.Now().UnixNano(), 0, 8
			return fsm.Result{Record: &used}, 8, nil
		}
		return fsm.Result{Err: fsm.ErrNotFound}, 8, nil
	}
	return fsm.Result{}, 0, cluster.ErrNotLeader
}

func (n *benchNode) ReadRecord(_ context.Context, hash string, _ cluster.Consistency, _ uint64, _ time.Duration) (*fsm.Record, uint64, error) {
	return n.byHash[hash], 7, nil
}
func (n *benchNode) ByID(string) (*fsm.Record, error) { return nil, nil }
func (n *benchNode) ListBySubject(string, string, string, int, int64) ([]*fsm.Record, string, error) {
	return nil, "", nil
}
func (n *benchNode) AppliedIndex() uint64                         { return 7 }
func (n *benchNode) LeaderContact() (time.Duration, bool)         { return 3 * time.Millisecond, true }
func (n *benchNode) Snapshot() (cluster.SnapshotInfo, error)      { return cluster.SnapshotInfo{}, nil }
func (n *benchNode) ClusterStatus(context.Context) cluster.Status { return cluster.Status{} }
func (n *benchNode) Touch(string, time.Time, string, string)      {}
func (n *benchNode) Ready() error                                 { return nil }

// benchBackend is a nonce store that finds every nonce fresh.
type benchBackend struct{}

func (benchBackend) Add(string, time.Duration) (bool, error) { return true, nil }

// benchServer returns an API server over a benchNode holding one access
// token, and that token's secret.
func benchServer(b *testing.B) (*Server, string) {
	b.Helper()
	p := token.DefaultPolicy()
	format, err := token.NewFormat("tks", p)
	if err != nil {
		b.Fatal(err)
	}
	secret, err := format.Mint(token.KindAccess)
	if err != nil {
		b.Fatal(err)
	}
	h := token.NewHasher(nil)
	now := time.Now()
	rec := &fsm.Record{ID: "4jN15fUFUhSf6eiYfEkBEr", Hash: h.Sum(secret), Kind: token.KindAccess, Subject: "bench",
		ClientID: "bench-app", Scopes: []string{"read"}, CreatedAt: now.UnixNano(), ExpiresAt: now.Add(time.Hour).UnixNano(),
		CreateIndex: 5, ModifyIndex: 5}
	node := &benchNode{byHash: map[string]*fsm.Record{rec.Hash: rec}}
	s := New(Config{Node: node, Policy: p, Format: format, Hasher: h, DC: "dc1",
		Nonces: nonce.NewChecker(benchBackend{}, nonce.Config{DC: "dc1"})})
	return s, secret
}

// serveBench sends body to path once per iteration and checks the status.
func serveBench(b *testing.B, s *Server, path string, body func(i int) []byte, want int) {
	b.Helper()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body(i)))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != want {
			b.Fatalf("%s: status %d, want %d: %s", path, w.Code, want, w.Body)
		}
	}
}

// BenchmarkLookup is the API's own cost of a local lookup: decode, check
// and hash the secret, read, and write the record.
func BenchmarkLookup(b *testing.B) {
	s, secret := benchServer(b)
	body := []byte(`{"token":"` + secret + `"}`)
	serveBench(b, s, "/v1/tokens/lookup", func(int) []byte { return body }, http.StatusOK)
}

// BenchmarkIssue is the API's own cost of an issue: decode, check, mint
// and hash, build the command, and write the answer; the node answers at
// once.
func BenchmarkIssue(b *testing.B) {
	s, _ := benchServer(b)
	body := []byte(`{"kind":"oauth2_code","subject":"user:42","client_id":"app1","scopes":["read"],"family":"grant-7","ip":"198.51.100.7","user_agent":"bench/1.0"}`)
	serveBench(b, s, "/v1/tokens", func(int) []byte { return body }, http.StatusCreated)
}

// BenchmarkConsume is the API's own cost of a consume: decode, check and
// hash the secret, build the command, and write the record.
func BenchmarkConsume(b *testing.B) {
	s, secret := benchServer(b)
	body := []byte(`{"token":"` + secret + `","client_id":"bench-app"}`)
	serveBench(b, s, "/v1/tokens/consume", func(int) []byte { return body }, http.StatusOK)
}

// BenchmarkNonce is the API's own cost of a nonce check, the store aside.
func BenchmarkNonce(b *testing.B) {
	s, _ := benchServer(b)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	serveBench(b, s, "/v1/nonces", func(i int) []byte {
		return []byte(`{"scope":"bench","nonce":"n-` + strconv.Itoa(i) + `","timestamp":` + ts + `}`)
	}, http.StatusCreated)
}

// BenchmarkDecodeLookup is the strict decode of a lookup body alone.
func BenchmarkDecodeLookup(b *testing.B) {
	body := []byte(`{"token":"tks_ac_QRmn83c1NtddDWnslKazTKpZ4kwGG0WT3IXukvfxmaS3PWtKG","consistency":"local"}`)
	b.ReportAllocs()
	for b.Loop() {
		var req wire.LookupRequest
		if e := decodeStrict(bytes.NewReader(body), &req, false); e != nil {
			b.Fatal(e)
		}
	}
}

// BenchmarkEncodeRecord is the JSON answer of a lookup alone, through
// encoding/json (JSON) and as a lookup writes it (Record).
func BenchmarkEncodeRecord(b *testing.B) {
	now := time.Now()
	exp := now.Add(time.Hour).UTC()
	rec := wire.Record{ID: "4jN15fUFUhSf6eiYfEkBEr", Kind: "access", Status: "active", Subject: "bench", ClientID: "bench-app",
		Scopes: []string{"read"}, CreatedAt: now.UTC(), ExpiresAt: &exp}
	for _, enc := range []struct {
		name  string
		write func(http.ResponseWriter)
	}{
		{"JSON", func(w http.ResponseWriter) { writeJSON(w, http.StatusOK, rec) }},
		{"Record", func(w http.ResponseWriter) { writeRecord(w, http.StatusOK, &rec) }},
	} {
		b.Run(enc.name, func(b *testing.B) {
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				w.Body.Reset()
				enc.write(w)
			}
		})
	}
}
