package transport

import "net/http"

// PeersOnly holds h, the handler of every node-to-node route served on
// the mux's RPC listener, to the peer authentication of Raft: with TLS
// configured, a request is served only on a connection whose peer
// certificate the cluster CA verified. The mux's handshake (LoadTLS)
// already demands one; this keeps the routes closed even under a TLS
// configuration that does not. Without TLS, allowed on loopback only, the
// node port trusts local processes.
func (m *Mux) PeersOnly(h http.Handler) http.Handler {
	if m.tls == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			m.log.Warn("refused a node-to-node call without a verified peer certificate",
				"remote", r.RemoteAddr, "path", r.URL.Path)
			http.Error(w, "node-to-node calls need a peer certificate from the cluster CA", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
