// Package transport is a node's one port for node-to-node traffic: a
// listener (Mux) whose connections start with a protocol byte that sends
// them to Raft's stream layer or to the node-to-node RPC server, over
// mutual TLS when it is configured.
//
// LoadTLS builds that TLS configuration from a node's certificate, key
// and cluster CA; every peer must hold a certificate the CA signed, good
// for both server and client authentication, since every node dials and
// accepts. PeersOnly keeps the RPC routes to such peers.
package transport
