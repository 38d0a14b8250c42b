package bench

import (
	"reflect"
	"testing"
)

func TestParseDCs(t *testing.T) {
	got, err := ParseDCs("a:3, b:1+1,c:0+2")
	want := []DC{{Name: "a", Nodes: 3}, {Name: "b", Nodes: 1, NonVoters: 1}, {Name: "c", NonVoters: 2}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseDCs = %+v, %v; want %+v", got, err, want)
	}
	if s := dcString(got); s != "a:3,b:1+1,c:0+2" {
		t.Errorf("dcString = %q", s)
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
