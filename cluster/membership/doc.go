// Package membership is a node's gossip membership, built on memberlist:
// who the nodes are, in which datacenter, where their Raft, API and
// gossip ports are, whether they want a vote, and whether they are alive.
//
// Start runs two pools, as Consul does: a WAN pool of every node of every
// DC, with WAN timings, and a LAN pool of this node's DC only, with LAN
// timings, so failures inside a DC are noticed quickly while cross-DC
// gossip stays cheap. Each node gossips its Meta; Members lists the
// Status of every node known. Gossip is encrypted with a key ring when one
// is given. memberlist's own lines go to the node's slog logger.
package membership
