//go:build linux

package netem

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// needNetwork skips a test that builds a Network where the machine
// cannot, unless RequireEnv is set (make test sets it as root).
func needNetwork(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// echo serves TCP and UDP echo on the node's address, from inside its
// namespace.
func echo(t *testing.T, n *Network, id string) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := inNetns(n.nodes[id].ns, func() (err error) {
		if ln, err = net.Listen("tcp", n.IP(id)+":9000"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", n.IP(id)+":9000")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 64)
				for {
					k, err := c.Read(b)
					if err != nil {
						return
					}
					c.Write(b[:k])
				}
			}()
		}
	}()
	go func() {
		b := make([]byte, 64)
		for {
			k, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:k], from)
		}
	}()
}

// exchange sends one datagram and one TCP round trip from the node with
// id from (or the host, when from is "") to the node to, each waiting at
// most wait; it returns the TCP connect time.
func exchange(n *Network, from, to string, wait time.Duration) (time.Duration, error) {
	var rtt time.Duration
	f := func() error {
		u, err := net.DialTimeout("udp", n.IP(to)+":9000", wait)
		if err != nil {
			return err
		}
		defer u.Close()
		u.SetDeadline(time.Now().Add(wait))
		if _, err := u.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 8)
		if _, err := u.Read(b); err != nil {
			return err
		}
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", n.IP(to)+":9000", wait)
		if err != nil {
			return err
		}
		rtt = time.Since(t0)
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err = c.Read(b)
		return err
	}
	if from == "" {
		return rtt, f()
	}
	return rtt, inNetns(n.nodes[from].ns, f)
}

// TestNetwork builds a two-DC network and checks that cross-DC packets,
// and only those, go through the delay line and take at least the
// latency less the jitter; that a partition cuts UDP and TCP between the
// nodes but not from the host; and that Heal and Close undo it all.
func TestNetwork(t *testing.T) {
	needNetwork(t)
	n, err := New([]Node{{"a1", "a"}, {"a2", "a"}, {"b1", "b"}}, Config{Latency: 40 * time.Millisecond, Jitter: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			n.Close()
		}
	}()
	for _, id := range []string{"a1", "a2", "b1"} {
		echo(t, n, id)
	}
	const wait = 2 * time.Second

	before := n.delayed.Load()
	if _, err := exchange(n, "a1", "a2", wait); err != nil {
		t.Fatalf("a1 → a2: %v", err)
	}
	if _, err := exchange(n, "", "b1", wait); err != nil {
		t.Fatalf("host → b1: %v", err)
	}
	if d := n.delayed.Load() - before; d != 0 {
		t.Errorf("%d packets within a DC or from the host went through the delay line", d)
	}
	rtt, err := exchange(n, "a1", "b1", wait)
	if err != nil {
		t.Fatalf("a1 → b1: %v", err)
	}
	if n.delayed.Load() == before {
		t.Error("no packet between DCs went through the delay line")
	}
	t.Logf("cross-DC connect %s, %d packets delayed", rtt, n.delayed.Load()-before)
	if rtt < 30*time.Millisecond {
		t.Errorf("cross-DC connect took %s, less than the 40ms round trip less the jitter", rtt)
	}

	if err := n.Partition([]string{"b1"}); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"a1", "a2"} {
		if _, err := exchange(n, from, "b1", 300*time.Millisecond); !isTimeout(err) {
			t.Errorf("%s → b1 during the partition: want a timeout, got %v", from, err)
		}
	}
	if _, err := exchange(n, "b1", "a1", 300*time.Millisecond); !isTimeout(err) {
		t.Errorf("b1 → a1 during the partition: want a timeout, got %v", err)
	}
	if _, err := exchange(n, "a1", "a2", wait); err != nil {
		t.Errorf("a1 → a2 during the partition of b1: %v", err)
	}
	if _, err := exchange(n, "", "b1", wait); err != nil {
		t.Errorf("host → b1 during the partition: %v", err)
	}

	if err := n.Heal(); err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(n, "b1", "a1", wait); err != nil {
		t.Errorf("b1 → a1 after heal: %v", err)
	}

	closed = true
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{n.router, n.nodes["a1"].ns} {
		if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left after Close: %v", ns, err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
