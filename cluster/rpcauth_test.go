package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/testpki"
)

// servePeersOnly serves, on m's RPC protocol, a handler behind the
// peersOnly of a node configured with nodeTLS.
func servePeersOnly(t *testing.T, m *Mux, nodeTLS *tls.Config) {
	t.Helper()
	n := &Node{cfg: Config{TLS: nodeTLS}, log: slog.New(slog.DiscardHandler)}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := &http.Server{Handler: n.peersOnly(ok), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(m.RPCListener()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("rpc server: %v; want http.ErrServerClosed", err)
		}
	})
}

// rpcStatusCode fetches / from to's RPC server through from and returns
// the HTTP status code.
func rpcStatusCode(from *Mux, to net.Addr) (int, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return from.DialRPC(ctx, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + to.String() + "/")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestPeersOnly(t *testing.T) {
	ca := testpki.New(t)
	good := loadTLS(t, ca.Issue(t, "server"))
	// lax completes handshakes with clients that present no certificate,
	// as a TLS configuration not built by LoadTLS might.
	lax := good.Clone()
	lax.ClientAuth, lax.VerifyConnection = tls.RequestClientCert, nil
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}

	cases := []struct {
		name           string
		server, client *tls.Config
		want           int // 0: the handshake fails
	}{
		{"peer with a CA certificate", good, loadTLS(t, ca.Issue(t, "peer")), http.StatusOK},
		{"client without a certificate", good, noCert, 0},
		{"client with another CA's certificate", good, loadTLS(t, testpki.New(t).Issue(t, "x")), 0},
		{"lax handshake, no certificate", lax, noCert, http.StatusForbidden},
		{"lax handshake, a certificate it did not verify", lax, loadTLS(t, ca.Issue(t, "peer")), http.StatusForbidden},
		{"plain TCP", nil, nil, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newMux(t, tc.server)
			servePeersOnly(t, srv, tc.server)
			cli, _ := newMux(t, tc.client)
			code, err := rpcStatusCode(cli, srv.Addr())
			switch {
			case tc.want == 0 && err == nil:
				t.Fatalf("want the handshake refused, got status %d", code)
			case tc.want != 0 && (err != nil || code != tc.want):
				t.Fatalf("want status %d, got %d, %v", tc.want, code, err)
			}
		})
	}
}
