// Package cluster runs the Raft node that replicates the token store
// across datacenters: hashicorp/raft with its log and stable store in
// bolt and its snapshots on disk, write coalescing, forwarding to the
// leader, consistent reads, log time from the voters' clocks, and the
// jobs the leader runs.
//
// Its parts, and where they live:
//
//   - cluster/transport: the node's one port for node-to-node traffic. A
//     mux hands each connection to Raft or to the node-to-node RPC server
//     by its first byte, over mutual TLS (LoadTLS) when configured.
//   - cluster/membership: gossip membership, a WAN pool of every node and
//     a LAN pool per DC, carrying each node's DC, addresses and role.
//   - The Raft node, in this package: Open and the node's life (node.go),
//     Config (config.go), the sentinel errors (errors.go), Raft's lines
//     written into the node's slog logger (raftlog.go), writes and
//     their coalescing into batches (apply.go), what may be proposed
//     (admit.go), the node-to-node calls that forward writes and reads to
//     the leader and answer status (rpc.go), a follower's forwarded writes
//     gathered into batches (forward.go), read consistency (read.go),
//     contact with a leader and staleness (contact.go), log time and the
//     version gate from what the voters report (voters.go), the cluster's
//     status (status.go) and metrics (metrics.go).
//   - Between gossip and Raft: joining through gossip (join.go), the first
//     bootstrap of a new cluster (bootstrap.go), the leader's reconcile
//     loop that adds, updates and removes servers and moves leadership to
//     the primary DC (reconcile.go), and the check that a peer answers as
//     itself before it gets a vote (peercheck.go).
//   - The leader's jobs: what starts when a node gains leadership
//     (leader.go), garbage collection of expired records (gc.go), and
//     the buffered last use of tokens, written in batches (lastuse.go).
//
// cluster imports transport and membership; neither knows of the node.
package cluster
