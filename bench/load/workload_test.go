package load

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/tokenstore/tokenstore/client"
)

func TestRetryUnavailable(t *testing.T) {
	unavailable := &client.Error{Status: http.StatusServiceUnavailable, Code: "no_leader"}
	calls := 0
	tok, err := retryUnavailable(context.Background(), func() (string, error) {
		if calls++; calls < 3 {
			return "", unavailable
		}
		return "tok", nil
	})
	if err != nil || tok != "tok" || calls != 3 {
		t.Fatalf("after two 503s: %q, %v, %d calls; want tok after 3", tok, err, calls)
	}

	refused := &client.Error{Status: http.StatusBadRequest, Code: "invalid_field"}
	calls = 0
	if _, err := retryUnavailable(context.Background(), func() (string, error) { calls++; return "", refused }); !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("a 400: %v after %d calls; want it at once", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	_, err = retryUnavailable(ctx, func() (string, error) {
		if calls++; calls == 2 {
			cancel()
		}
		return "", unavailable
	})
	if !errors.Is(err, unavailable) || calls != 2 {
		t.Fatalf("cancelled while unavailable: %v after %d calls; want the 503 after 2", err, calls)
	}
}
