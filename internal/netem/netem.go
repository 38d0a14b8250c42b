// Package netem emulates the network between the nodes of a local
// cluster: every node in a Linux network namespace of its own, a router
// namespace between them with a cross-DC delay line, and partitions cut
// and healed on demand (see Network). It builds only on Linux; elsewhere
// New and Available return ErrNotLinux.
package netem

import (
	"errors"
	"time"
)

// Node is a node to place in a Network.
type Node struct{ ID, DC string }

// Config is the cross-DC link of a Network.
type Config struct {
	// Latency is the round trip between nodes of different datacenters;
	// Jitter spreads it by up to ± Jitter. Packets of a direction stay
	// in order, so on a busy link the delay leans to the upper end.
	Latency time.Duration `json:"latency_ns"`
	Jitter  time.Duration `json:"jitter_ns"`
}

// Errors of a machine where a Network cannot be built.
var (
	// ErrUnavailable is a Linux machine where this process cannot build
	// a Network: not root, or no iproute2 or TUN device.
	ErrUnavailable = errors.New("netem: network namespaces need root and iproute2")
	// ErrNotLinux is any other system.
	ErrNotLinux = errors.New("netem: network emulation needs Linux network namespaces")
)

// RequireEnv, when set in the environment, makes the tests that build a
// Network fail where they cannot, rather than skip or fall back.
const RequireEnv = "TOKENSTORE_REQUIRE_NETNS"
