package fsm_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// A page of a subject examines at most fsm.ListScan records, however many
// of them are inactive: the page then holds fewer than limit records (none
// maybe) and its cursor resumes after the last record examined.
func TestListBySubjectScansABoundedNumberPerPage(t *testing.T) {
	h := newHarness(t)
	const subject = "user:many"
	issue := func(id, kind string, ttl time.Duration) fsm.Command {
		return with(newIssue(id, kind, ttl, 0), func(r *fsm.Record) { r.Subject = subject })
	}
	cmds := []fsm.Command{issue("a-first", "access", time.Hour)}
	expired := make([]string, 3*fsm.ListScan+5)
	for i := range expired {
		expired[i] = fmt.Sprintf("e%05d", i)
		cmds = append(cmds, issue(expired[i], "access", time.Minute))
	}
	cmds = append(cmds, issue("z1", "access", time.Hour), issue("z2", "remember", time.Hour), issue("z3", "access", time.Hour))
	for _, res := range h.batch(t0, cmds...) {
		if res.Err != nil {
			t.Fatalf("issue: %v", res.Err)
		}
	}
	now := ns(t0.Add(2 * time.Minute)) // every e… has expired, none is collected

	// a-first and ListScan-1 expired records, then ListScan expired ones
	// twice, then the last five and the z… records.
	want := [][]string{
		{"a-first", "next=" + expired[fsm.ListScan-2]},
		{"next=" + expired[2*fsm.ListScan-2]},
		{"next=" + expired[3*fsm.ListScan-2]},
		{"z1", "z2", "z3", "next="},
	}
	for _, limit := range []int{10, 1000, 5 * fsm.ListScan} {
		if got := pages(t, h.s, subject, "", limit, now); !reflect.DeepEqual(got, want) {
			t.Fatalf("ListBySubject(%q) pages of %d = %v, want %v", subject, limit, got, want)
		}
	}
	// Records of another kind count as examined too.
	want[3] = []string{"z1", "z3", "next="}
	if got := pages(t, h.s, subject, "access", 10, now); !reflect.DeepEqual(got, want) {
		t.Fatalf("ListBySubject(%q, access) pages = %v, want %v", subject, got, want)
	}
	// A full page still ends at its last record when more follow.
	if got, next := h.s.ListBySubject(subject, "", expired[len(expired)-1], 2, now); !reflect.DeepEqual(ids(got), []string{"z1", "z2"}) || next != "z2" {
		t.Fatalf("ListBySubject after the last expired record, limit 2 = %v, cursor %q; want [z1 z2], cursor z2", ids(got), next)
	}
	// Running out exactly at the subject's last record ends the listing.
	if got, next := h.s.ListBySubject(subject, "", expired[len(expired)-fsm.ListScan+2], 10, now); !reflect.DeepEqual(ids(got), []string{"z1", "z2", "z3"}) || next != "" {
		t.Fatalf("ListBySubject of the last %d records = %v, cursor %q; want [z1 z2 z3], no cursor", fsm.ListScan, ids(got), next)
	}
}
