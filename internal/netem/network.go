//go:build linux

package netem

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Network puts every node of a local cluster in a network namespace of
// its own, behind a router namespace that carries all traffic between
// them, so that faults act on links the way a real network's would and
// on every protocol alike: Raft, forwarded requests, and gossip over UDP
// and TCP.
//
//	the host ────── veth ── router ── veth ── node n1 (10.X.1.2)
//	                          │ ╰──── veth ── node n2 (10.X.1.6)
//	                          │ ╰──── veth ── node n4 (10.X.2.2)
//	                         tun: the cross-DC delay line
//
// Datacenter d holds 10.X.d.0/24, each node a /30 of it; the host end is
// 10.X.0.1. The router's policy rules send packets between nodes of
// different datacenters through a TUN device, where a goroutine holds
// each for the one-way delay before writing it back: the kernel's netem
// queueing discipline is a module that minimal kernels leave out, and a
// TCP proxy such as toxiproxy neither carries UDP nor knows which node a
// connection comes from. A partition is a pair of blackhole rules per cut
// node pair: packets vanish silently, as on a real split, while the
// clients on the host still reach every node. It needs root and iproute2.
type Network struct {
	prefix string   // of this network's namespace names
	link   string   // the host's end of the link to the router
	router string   // the router namespace
	made   []string // the namespaces this network created
	net    byte     // X of 10.X.0.0/16
	nodes  map[string]*netNode
	dcs    map[string]int // datacenter → d
	dcOf   map[[4]byte]int

	oneWay, jitter time.Duration
	tun            *os.File
	lines          map[[2]int]*delayLine
	delayed        atomic.Int64 // packets through the delay line
	wg             sync.WaitGroup

	mu  sync.Mutex
	cut [][2]string // blackhole rules in place, "from" and "to" prefixes
}

type netNode struct {
	Node
	ns       string
	ip, gate net.IP
}

// Policy rule priorities in the router, in the order it evaluates them.
// Traffic between the host and a node matches none of them.
const (
	prioCut    = 200 // partitions
	prioFromWA = 300 // back from the delay line: straight to the node
	prioWAN    = 400 // between datacenters: into the delay line
	wanTable   = "100"
	wanDev     = "wan"
)

// Available tells whether this process can build a Network: it runs as
// root and finds iproute2 and the TUN device.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnavailable)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// netSeq numbers the networks of this process.
var netSeq atomic.Int64

// New builds the namespaces, links and routes for nodes; Close
// removes them. Namespaces that a killed process left behind are removed
// first.
func New(nodes []Node, cfg Config) (_ *Network, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	removeStaleNetworks()
	seq := netSeq.Add(1)
	n := &Network{prefix: fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), seq),
		link: fmt.Sprintf("tsn%dx%d", os.Getpid(), seq), nodes: map[string]*netNode{},
		dcs: map[string]int{}, dcOf: map[[4]byte]int{}, lines: map[[2]int]*delayLine{},
		oneWay: cfg.Latency / 2, jitter: cfg.Jitter / 2}
	n.router = n.prefix + "-r"
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := n.addNetns(n.router); err != nil {
		return nil, err
	}
	if err := n.claimSubnet(); err != nil {
		return nil, err
	}
	routerCmds := []string{
		"link set lo up",
		fmt.Sprintf("addr add 10.%d.0.2/30 dev host", n.net),
		"link set host up"}
	perDC := map[int]int{}
	for i, nd := range nodes {
		d, ok := n.dcs[nd.DC]
		if !ok {
			d = len(n.dcs) + 1
			n.dcs[nd.DC] = d
		}
		k := perDC[d]
		perDC[d]++
		if d > 250 || k > 62 {
			return nil, fmt.Errorf("netem: too many datacenters or nodes")
		}
		nn := &netNode{Node: nd, ns: fmt.Sprintf("%s-%d", n.prefix, i+1),
			gate: net.IPv4(10, n.net, byte(d), byte(4*k+1)).To4(), ip: net.IPv4(10, n.net, byte(d), byte(4*k+2)).To4()}
		n.nodes[nd.ID] = nn
		n.dcOf[[4]byte(nn.ip)] = d
		if err := n.addNetns(nn.ns); err != nil {
			return nil, err
		}
		dev := fmt.Sprintf("n%d", i+1)
		routerCmds = append(routerCmds,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", dev, nn.ns),
			fmt.Sprintf("addr add %s/30 dev %s", nn.gate, dev),
			fmt.Sprintf("link set %s up", dev))
	}
	if err := ipBatch(n.router, routerCmds); err != nil {
		return nil, err
	}
	for _, nn := range n.nodes {
		if err := ipBatch(nn.ns, []string{"link set lo up", fmt.Sprintf("addr add %s/30 dev eth0", nn.ip),
			"link set eth0 up", fmt.Sprintf("route add default via %s", nn.gate)}); err != nil {
			return nil, err
		}
	}
	if err := inNetns(n.router, routerSysctls); err != nil {
		return nil, err
	}
	if cfg.Latency > 0 {
		if err := n.startDelayLine(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// routerSysctls make the router forward, and accept the cross-DC packets
// that arrive from a node's link although the route back to their source
// goes through the delay line (strict reverse-path filtering drops them).
func routerSysctls() error {
	for _, s := range []string{"ipv4/ip_forward", "ipv4/conf/all/rp_filter", "ipv4/conf/default/rp_filter"} {
		v := "0"
		if s == "ipv4/ip_forward" {
			v = "1"
		}
		if err := os.WriteFile("/proc/sys/net/"+s, []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startDelayLine opens the TUN device in the router and routes traffic
// between datacenters through it.
func (n *Network) startDelayLine() error {
	err := inNetns(n.router, func() (err error) {
		n.tun, err = openTUN(wanDev)
		return err
	})
	if err != nil {
		return err
	}
	cmds := []string{
		"link set " + wanDev + " up",
		fmt.Sprintf("route add default dev %s table %s", wanDev, wanTable),
		fmt.Sprintf("rule add prio %d iif %s lookup main", prioFromWA, wanDev),
	}
	for a, da := range n.dcs {
		for b, db := range n.dcs {
			if a != b {
				cmds = append(cmds, fmt.Sprintf("rule add prio %d from 10.%d.%d.0/24 to 10.%d.%d.0/24 lookup %s",
					prioWAN, n.net, da, n.net, db, wanTable))
				n.lines[[2]int{da, db}] = &delayLine{ch: make(chan packet, 4096)}
			}
		}
	}
	if err := ipBatch(n.router, cmds); err != nil {
		return err
	}
	for _, l := range n.lines {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); l.run(n.tun) }()
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.delay() }()
	return nil
}

// packet is one IP packet in a delay line, written back when due.
type packet struct {
	b   []byte
	due time.Time
}

// delayLine is one direction between two datacenters: packets leave in
// the order they came, each no earlier than its due time.
type delayLine struct {
	ch   chan packet
	last time.Time // the latest due time handed out; used by delay only
}

func (l *delayLine) run(tun *os.File) {
	for p := range l.ch {
		if d := time.Until(p.due); d > 0 {
			time.Sleep(d)
		}
		tun.Write(p.b) // a packet the kernel refuses is a lost packet
	}
}

// delay reads the packets the router sends between datacenters and
// queues each on its line with the one-way delay and jitter; a full line
// drops, as a router's queue does.
func (n *Network) delay() {
	defer func() {
		for _, l := range n.lines {
			close(l.ch)
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	buf := make([]byte, 1<<16)
	for {
		k, err := n.tun.Read(buf)
		if err != nil {
			return
		}
		p := buf[:k]
		if k < 20 || p[0]>>4 != 4 {
			continue
		}
		l := n.lines[[2]int{n.dcOf[[4]byte(p[12:16])], n.dcOf[[4]byte(p[16:20])]}]
		if l == nil {
			continue
		}
		d := n.oneWay
		if n.jitter > 0 {
			d += time.Duration(rng.Int64N(int64(2*n.jitter)+1)) - n.jitter
		}
		due := time.Now().Add(d)
		if due.Before(l.last) {
			due = l.last
		}
		l.last = due
		select {
		case l.ch <- packet{b: bytes.Clone(p), due: due}:
			n.delayed.Add(1)
		default:
		}
	}
}

// IP is the node's address.
func (n *Network) IP(id string) string { return n.nodes[id].ip.String() }

// Command runs bin with args in the node's namespace; ip netns exec
// execs bin, so the process's pid is the command's.
func (n *Network) Command(id, bin string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.nodes[id].ns, bin}, args...)
}

// Partition cuts every node of side off from every other node, in both
// directions, until Heal; the host's clients still reach all of them.
// One partition at a time: Heal first.
func (n *Network) Partition(side []string) error {
	in := map[string]bool{}
	for _, id := range side {
		if n.nodes[id] == nil {
			return fmt.Errorf("netem: no node %q", id)
		}
		in[id] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.cut) > 0 {
		return fmt.Errorf("netem: already partitioned")
	}
	var cmds []string
	for a := range in {
		for id, b := range n.nodes {
			if in[id] {
				continue
			}
			for _, pair := range [][2]string{{n.nodes[a].ip.String(), b.ip.String()}, {b.ip.String(), n.nodes[a].ip.String()}} {
				cmds = append(cmds, fmt.Sprintf("rule add prio %d from %s to %s blackhole", prioCut, pair[0], pair[1]))
				n.cut = append(n.cut, pair)
			}
		}
	}
	return ipBatch(n.router, cmds)
}

// Heal removes every partition.
func (n *Network) Heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var cmds []string
	for _, pair := range n.cut {
		cmds = append(cmds, fmt.Sprintf("rule del prio %d from %s to %s blackhole", prioCut, pair[0], pair[1]))
	}
	n.cut = nil
	return ipBatch(n.router, cmds)
}

// Close removes the namespaces it made, which takes their links and the
// host's route with them, and stops the delay line. The processes in the
// namespaces must have ended.
func (n *Network) Close() error {
	if n.tun != nil {
		n.tun.Close()
		n.wg.Wait()
	}
	var errs []error
	for _, ns := range n.made {
		errs = append(errs, ip("netns", "del", ns))
	}
	n.made = nil
	return errors.Join(errs...)
}

// addNetns creates a namespace and remembers it for Close.
func (n *Network) addNetns(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	n.made = append(n.made, name)
	return nil
}

// netnsPrefix starts the name of every namespace of a Network, followed
// by the pid of the process that made it.
const netnsPrefix = "tokenstore-bench-"

// staleNetns names a namespace of a Network: the prefix, the pid of its
// process, the network's number, the node.
var staleNetns = regexp.MustCompile(`^` + netnsPrefix + `([0-9]+)-[0-9]+-`)

// removeStaleNetworks removes the namespaces of runs whose process is
// gone, after killing, by pid, the nodes still running in them.
func removeStaleNetworks() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		m := staleNetns.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		out, _ := exec.Command("ip", "netns", "pids", e.Name()).Output()
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		ip("netns", "del", e.Name())
	}
}

// claimSubnet picks X for 10.X.0.0/16 among 200–250, one that overlaps
// no route of the host, and links the host to the router with a route to
// it. Adding the route is the claim: should another network have taken X
// in the meantime, it fails, and the next X is tried.
func (n *Network) claimSubnet() error {
	routes, err := hostRoutes()
	if err != nil {
		return err
	}
	if err := ipBatch("", []string{fmt.Sprintf("link add %s type veth peer name host netns %s", n.link, n.router),
		fmt.Sprintf("link set %s up", n.link)}); err != nil {
		return err
	}
	start := os.Getpid() % 51
	for i := range 51 {
		x := 200 + (start+i)%51
		subnet := &net.IPNet{IP: net.IPv4(10, byte(x), 0, 0).To4(), Mask: net.CIDRMask(16, 32)}
		if slices.ContainsFunc(routes, func(r *net.IPNet) bool { return r.Contains(subnet.IP) || subnet.Contains(r.IP) }) {
			continue
		}
		err = ipBatch("", []string{fmt.Sprintf("addr add 10.%d.0.1/30 dev %s", x, n.link),
			fmt.Sprintf("route add %s via 10.%d.0.2 dev %s", subnet, x, n.link)})
		if err == nil {
			n.net = byte(x)
			return nil
		}
		ip("addr", "flush", "dev", n.link)
	}
	return fmt.Errorf("netem: no free 10.X.0.0/16 for X in 200–250: %v", err)
}

// routeTypes are the words that may come before the destination of a
// route in ip route's output.
var routeTypes = []string{"unicast", "local", "broadcast", "multicast", "anycast", "unreachable", "blackhole", "prohibit", "throw", "nat"}

// hostRoutes are the destinations of the host's IPv4 routes in every
// table, but the default ones.
func hostRoutes() ([]*net.IPNet, error) {
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip route: %v: %s", err, out)
	}
	var routes []*net.IPNet
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && slices.Contains(routeTypes, f[0]) {
			f = f[1:]
		}
		if len(f) == 0 || f[0] == "default" {
			continue
		}
		dst := f[0]
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, r, err := net.ParseCIDR(dst); err == nil {
			routes = append(routes, r)
		}
	}
	return routes, nil
}

// ip runs one iproute2 command.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs iproute2 commands in one process, in namespace ns ("" is
// the host's); one that fails does not stop the others.
func ipBatch(ns string, cmds []string) error {
	if len(cmds) == 0 {
		return nil
	}
	args := []string{"-force", "-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// inNetns runs f on an OS thread moved into the named namespace, on a
// goroutine of its own: should the thread fail to move back, it stays
// locked and the runtime ends it with the goroutine.
func inNetns(name string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", name))
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns back from %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// openTUN creates a TUN device of IP packets without a header, in the
// calling thread's namespace; reads and writes go through the poller.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}
