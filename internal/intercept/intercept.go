// Package intercept is a client transport for tests: it answers the
// requests a test picks out itself, as a node would, and sends the others
// on, so that a test can make a node's answer fail without the node.
package intercept

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// Transport is a client transport that answers the requests fake picks
// out itself, and sends the others to the node.
type Transport struct {
	mu    sync.Mutex
	fake  func(path string, body []byte) *http.Response // nil: to the node
	sent  map[string]int                                // requests the node got, by path
	faked int
}

// New returns a Transport whose fake picks the requests it answers
// (nil: to the node).
func New(fake func(path string, body []byte) *http.Response) *Transport {
	return &Transport{fake: fake, sent: map[string]int{}}
}

func (x *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			return nil, err
		}
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	x.mu.Lock()
	resp := x.fake(r.URL.Path, body)
	if resp == nil {
		x.sent[r.URL.Path]++
	} else {
		x.faked++
	}
	x.mu.Unlock()
	if resp != nil {
		resp.Request = r
		return resp, nil
	}
	return http.DefaultTransport.RoundTrip(r)
}

// Counts returns the requests the node got by path, and those faked.
func (x *Transport) Counts() (map[string]int, int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	sent := make(map[string]int, len(x.sent))
	for p, n := range x.sent {
		sent[p] = n
	}
	return sent, x.faked
}

// APIError is a node's error answer; op < 0: none.
func APIError(status int, code string, op int) *http.Response {
	var we wire.Error
	we.Error.Code, we.Error.Message = code, "answered by the test's transport"
	if op >= 0 {
		we.Error.Op = &op
	}
	b, _ := json.Marshal(we)
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b))}
}

// FamilyOpAt is the index of the first revoke_family op of a batch, -1
// if none.
func FamilyOpAt(body []byte) int {
	var b struct {
		Ops []struct {
			Op string `json:"op"`
		} `json:"ops"`
	}
	if json.Unmarshal(body, &b) != nil {
		return -1
	}
	for i, op := range b.Ops {
		if op.Op == wire.OpRevokeFamily {
			return i
		}
	}
	return -1
}

// WaitFenced waits until c's cluster takes a batch with a family
// revocation: a new cluster does once its leader has written the log's
// version fence.
func WaitFenced(t *testing.T, c *client.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Batch(t.Context(), client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: "fence-probe", Kind: "access"}))
		var ce *client.Error
		if err == nil {
			return
		}
		if !errors.As(err, &ce) || ce.Code != wire.CodeUpgrading || time.Now().After(deadline) {
			t.Fatalf("a batch with a family revocation: %v", err)
		}
		<-time.After(50 * time.Millisecond)
	}
}
