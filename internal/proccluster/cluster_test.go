package proccluster

import (
	"reflect"
	"slices"
	"testing"
)

func TestParseDCs(t *testing.T) {
	got, err := ParseDCs("a:3, b:1+1,c:0+2")
	want := []DC{{Name: "a", Nodes: 3}, {Name: "b", Nodes: 1, NonVoters: 1}, {Name: "c", NonVoters: 2}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseDCs = %+v, %v; want %+v", got, err, want)
	}
	if s := FormatDCs(got); s != "a:3,b:1+1,c:0+2" {
		t.Errorf("FormatDCs = %q", s)
	}
	if dcs, err := ParseDCs(""); dcs != nil || err != nil {
		t.Errorf("ParseDCs(\"\") = %v, %v; want none", dcs, err)
	}
	for _, bad := range []string{"a", "a:", ":3", "a:x", "a:0", "a:0+0", "a:-1", "a:1+", "a:1+x", "a:1+-1", "a:0+2", "a:0+1,b:0+1"} {
		if _, err := ParseDCs(bad); err == nil {
			t.Errorf("ParseDCs(%q): want an error", bad)
		}
	}
}

// TestNewCluster lays out clusters without starting them: the flags
// every node gets from the datacenters, the joins and the addresses.
func TestNewCluster(t *testing.T) {
	c, err := NewCluster(ClusterConfig{Binary: "tokenstore", Dir: t.TempDir(), DCs: []DC{{Name: "a", Nodes: 2}, {Name: "b", Nodes: 1, NonVoters: 1}},
		Args: []string{"--snapshot-interval", "5s"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"n1": {"--bootstrap-expect", "3", "--primary-dc", "a", "--snapshot-interval", "5s"},
		"n2": {"--bootstrap-expect", "3", "--primary-dc", "a", "--snapshot-interval", "5s"},
		"n3": {"--bootstrap-expect", "3", "--primary-dc", "a", "--snapshot-interval", "5s"},
		"n4": {"--nonvoter", "--primary-dc", "a", "--snapshot-interval", "5s"},
	}
	seen := map[string]bool{}
	for i, n := range c.Nodes {
		if !slices.Equal(n.Flags, want[n.ID]) {
			t.Errorf("%s: flags %q, want %q", n.ID, n.Flags, want[n.ID])
		}
		join := c.Nodes[0].Gossip
		if i == 0 {
			join = c.Nodes[1].Gossip
		}
		if !slices.Equal(n.Join, []string{join}) {
			t.Errorf("%s joins through %q, want %s", n.ID, n.Join, join)
		}
		if wantDC := map[bool]string{true: "a", false: "b"}[i < 2]; n.DC != wantDC || n.Voter != (i < 3) {
			t.Errorf("%s: dc %s voter %v, want dc %s voter %v", n.ID, n.DC, n.Voter, wantDC, i < 3)
		}
		for _, a := range []string{n.API, n.Raft, n.Gossip, n.GossipLAN} {
			if a == "" || seen[a] {
				t.Errorf("%s: address %q empty or given twice", n.ID, a)
			}
			seen[a] = true
		}
	}

	one, err := NewCluster(ClusterConfig{Binary: "tokenstore", Dir: t.TempDir(), Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	n := one.Nodes[0]
	if len(one.Nodes) != 1 || n.ID != "n1" || n.DC != "dc1" || n.Gossip != "" || n.Join != nil {
		t.Fatalf("a one-node cluster: want n1 in dc1 without gossip or a join, got %+v", n)
	}
	args := n.Args()
	for _, f := range []string{"--tls-cert", "--tls-key", "--tls-ca", "--gossip-key"} {
		if !slices.Contains(args, f) {
			t.Errorf("Secure: want %s in %q", f, args)
		}
	}
	if slices.Contains(args, "--bootstrap-expect") || slices.Contains(args, "--gossip-addr") {
		t.Errorf("a one-node cluster: want neither --bootstrap-expect nor --gossip-addr in %q", args)
	}
}
