package fsm

import (
	"fmt"
	"testing"
	"time"
)

func refusedEntry(t *testing.T, now int64, reqs []string, cmds ...Command) []byte {
	t.Helper()
	b := &Batch{Now: now, Entries: make([][]byte, len(cmds)), Reqs: reqs}
	for i, c := range cmds {
		e, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		b.Entries[i] = e
	}
	e, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// An Issue refused because its id is taken leaves no profile (kind,
// client id, title, user agent) in the state's table: refused Issues
// alone would otherwise fill it, and every record stored after that
// would hold its profile inline.
func TestRefusedIssueLeavesNoProfile(t *testing.T) {
	m := New()
	now := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC).UnixNano()
	idx := uint64(0)
	apply := func(cmds ...Command) []Result {
		idx++
		return m.Apply(idx, refusedEntry(t, now, nil, cmds...)).Batch
	}
	apply(&Issue{Record: Record{ID: "taken", Hash: "h-0", Kind: "access", Title: "t"}, TTL: int64(time.Hour)})
	before := len(m.st.profiles.ids)
	var cmds []Command
	for i := range 64 {
		cmds = append(cmds, &Issue{Record: Record{ID: "taken", Hash: fmt.Sprint("h-", i+1), Kind: "access", Title: fmt.Sprint("title-", i)}, TTL: int64(time.Hour)})
	}
	for i, r := range apply(cmds...) {
		if r.Err != ErrExists {
			t.Fatalf("refused issue %d: %v, want ErrExists", i, r.Err)
		}
	}
	if got := len(m.st.profiles.ids); got != before {
		t.Fatalf("64 refused Issues left %d profiles in the table (had %d)", got, before)
	}
	// The id forgotten is the next one given: a stored Issue of a
	// refused one's profile shares it.
	apply(&Issue{Record: Record{ID: "fresh", Hash: "h-fresh", Kind: "access", Title: "title-3"}, TTL: int64(time.Hour)})
	if got := len(m.st.profiles.ids); got != before+1 {
		t.Fatalf("a stored Issue of a new profile: %d profiles, want %d", got, before+1)
	}
	if r := m.st.record(m.st.storedID("fresh")); r.Title != "title-3" || r.Kind != "access" {
		t.Fatalf("the stored record reads kind %q title %q", r.Kind, r.Title)
	}
}
