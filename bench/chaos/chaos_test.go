package chaos

import (
	"slices"
	"strconv"
	"testing"

	"github.com/tokenstore/tokenstore/internal/proccluster"
)

func TestMajorityDCs(t *testing.T) {
	run := func(dcs ...proccluster.DC) *chaosRun {
		r := &chaosRun{cfg: Config{DCs: dcs}, cluster: &proccluster.Cluster{}}
		for _, d := range dcs {
			for k := range d.Nodes + d.NonVoters {
				id := "n" + strconv.Itoa(len(r.cluster.Nodes)+1)
				r.cluster.Nodes = append(r.cluster.Nodes, &proccluster.Node{ID: id, DC: d.Name, Voter: k < d.Nodes})
			}
		}
		return r
	}
	a3b2 := run(proccluster.DC{Name: "a", Nodes: 3}, proccluster.DC{Name: "b", Nodes: 2})
	a2b2 := run(proccluster.DC{Name: "a", Nodes: 2}, proccluster.DC{Name: "b", Nodes: 2})
	a2b1nv2 := run(proccluster.DC{Name: "a", Nodes: 2}, proccluster.DC{Name: "b", Nodes: 1, NonVoters: 2})
	for _, tc := range []struct {
		r         *chaosRun
		side      []string
		want, cut []string
	}{
		{a3b2, []string{"n1", "n2", "n3"}, []string{"a"}, []string{"b"}}, // the primary DC keeps 3 of 5
		{a3b2, []string{"n4", "n5"}, []string{"a"}, []string{"b"}},
		{a3b2, []string{"n4"}, []string{"a"}, nil},            // b is split
		{a3b2, []string{"n1"}, []string{"b"}, nil},            // a is split
		{a2b2, []string{"n1", "n2"}, nil, []string{"a", "b"}}, // 2 of 4 is no majority
		{a2b1nv2, []string{"n3", "n4", "n5"}, []string{"a"}, []string{"b"}},
		{a2b1nv2, []string{"n4"}, []string{"a"}, nil},
	} {
		if got := majorityDCs(tc.r.cluster.Nodes, tc.r.cfg.DCs, tc.side); !slices.Equal(got, tc.want) {
			t.Errorf("%s cut off: majority DCs %v, want %v", tc.side, got, tc.want)
		}
		if got := cutDCs(tc.r.cluster.Nodes, tc.r.cfg.DCs, tc.side); !slices.Equal(got, tc.cut) {
			t.Errorf("%s cut off: DCs cut off from any leader %v, want %v", tc.side, got, tc.cut)
		}
	}
}
