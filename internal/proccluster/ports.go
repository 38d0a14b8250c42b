package proccluster

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// floor is the lowest port picked.
const floor = 10000

// handedOut are the ports FreeAddrs has returned in this process. None is
// returned again: until its server binds it, a port handed out is free,
// and a later call could pick it too.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreeAddrs returns n distinct 127.0.0.1 addresses whose ports are free
// for both TCP and UDP (gossip uses both): the one way ports are picked
// for the processes started here and for any a test starts itself, since
// a separate process must be told its port before it binds it.
//
// The ports come from below the kernel's ephemeral range. A port picked
// by listening on :0 and closing is itself ephemeral: until the server
// binds it, any outgoing connection of any concurrent process may take it
// (seen as "address already in use" when test packages run in parallel).
// Below the range only an explicit bind can collide, and the random
// choice from thousands of ports makes that unlikely. No port is handed
// out twice in one process.
func FreeAddrs(n int) ([]string, error) {
	low := ephemeralLow()
	if low-floor < 1000 {
		return nil, fmt.Errorf("proccluster: ephemeral ports start at %d, too low to pick ports below them", low)
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 50*n {
			return nil, fmt.Errorf("proccluster: found only %d of %d free loopback ports", len(out), n)
		}
		port := floor + rand.IntN(low-floor)
		if handedOut.ports[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		held = append(held, l)
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		held = append(held, u)
		handedOut.ports[port] = true
		out = append(out, addr)
	}
	return out, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil {
				return low
			}
		}
	}
	return 32768
}
