package transport

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/tokenstore/tokenstore/internal/testpki"
)

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
			serveRPC(t, srv, srv.PeersOnly(okHandler))
			cli, _ := newMux(t, tc.client)
			code, _, err := rpcFetch(cli, srv.Addr())
			switch {
			case tc.want == 0 && err == nil:
				t.Fatalf("want the handshake refused, got status %d", code)
			case tc.want != 0 && (err != nil || code != tc.want):
				t.Fatalf("want status %d, got %d, %v", tc.want, code, err)
			}
		})
	}
}
