package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/cluster"
)

// OperatorSnapshotPath takes a Raft snapshot of the node's state now
// (POST, behind the API keys), as `consul snapshot save` or `etcdctl
// snapshot save` would before a backup. It answers the snapshot's last
// index, its size and how long it took, once it is on disk.
const OperatorSnapshotPath = "/v1/operator/snapshot"

// withOperator adds the operator routes to h, the API's handler. Every
// other path goes to h as it came: a ServeMux in front would answer a path
// that is not clean (an Envoy check of "/a//b") with a redirect.
func withOperator(h http.Handler, apiSrv *api.Server, node *cluster.Node) http.Handler {
	snapshot := apiSrv.RequireKey(OperatorSnapshotPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, `{"error":"method_not_allowed"}`, http.StatusMethodNotAllowed)
			return
		}
		info, err := node.Snapshot()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case errors.Is(err, raft.ErrNothingNewToSnapshot):
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(map[string]string{"error": "nothing_new", "message": "nothing applied since the last snapshot"})
			return
		case err != nil:
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": "unavailable", "message": err.Error()})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"index": info.Index, "bytes": info.Bytes, "took_ms": info.Took.Milliseconds()})
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == OperatorSnapshotPath {
			snapshot.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
