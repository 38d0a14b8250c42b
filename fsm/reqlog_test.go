package fsm

import (
	"fmt"
	"testing"
)

// FuzzReqLog drives the window of remembered requests with adds, looks
// and forgets from the input, against a model (a map and a list in log
// order), and checks that a view taken along the way still reads as it
// was when taken.
func FuzzReqLog(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 1, 3, 2, 1, 0, 1, 3, 0})
	f.Add([]byte("\x00\x00\x00\x01\x00\x02\x02\x05\x00\x03\x03\x00"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		// Numbered and placed just short of 2^32, where the table's
		// sequence numbers and the ids' offsets wrap.
		// Chunks of entries and of ids are small there, so that the input
		// fills many.
		l := reqLog{head: 1<<32 - 3, tail: 1<<32 - 3, ids: reqIDs{tail: 1<<32 - 20}}
		type item struct {
			id string
			at int64
		}
		var model []item
		live := map[string]bool{}
		var at int64
		var view reqView
		var viewed []item
		check := func(v *reqView, want []item) {
			t.Helper()
			if v.tail-v.head != uint64(len(want)) {
				t.Fatalf("view holds %d requests, want %d", v.tail-v.head, len(want))
			}
			for i, w := range want {
				e := v.q.at(v.head + uint64(i))
				if id := v.ids.id(e); id != w.id || e.at != w.at {
					t.Fatalf("view request %d: %q at %d, want %q at %d", i, id, e.at, w.id, w.at)
				}
				if want := handle(len(w.id) + 1); e.rec != want || (e.idLen&reqHasRest != 0) != (len(w.id)%2 == 0) {
					t.Fatalf("view request %d: outcome %d %v, want %d", i, e.rec, e.idLen&reqHasRest != 0, want)
				}
				if o := restOf(v.rests, v.head+uint64(i)); (o != nil) != (len(w.id)%2 == 0) || o != nil && o.Err != w.id {
					t.Fatalf("view request %d: rest %+v", i, o)
				}
			}
		}
		for i := 0; i+1 < len(ops); i += 2 {
			arg := int(ops[i+1])
			switch ops[i] % 5 {
			case 0, 1: // add, 1 at a later time
				if ops[i]%5 == 1 {
					at += int64(arg % 4)
				}
				id := fmt.Sprintf("n1-%d", arg*arg%97)
				if arg%7 == 0 {
					id = fmt.Sprintf("%*d", 1+arg, arg)
				}
				seq, first := l.add(id, at)
				if first == live[id] {
					t.Fatalf("add %q: first %v, remembered %v", id, first, live[id])
				}
				if first {
					var rest *Outcome
					if len(id)%2 == 0 {
						rest = &Outcome{Err: id}
					}
					l.set(seq, handle(len(id)+1), noHandle, rest)
					live[id] = true
					model = append(model, item{id, at})
				}
			case 2: // forget
				before := at - int64(arg%8)
				var dropped []handle
				l.forget(before, func(h handle) { dropped = append(dropped, h) })
				n := 0
				for n < len(model) && model[n].at < before {
					if dropped[n] != handle(len(model[n].id)+1) {
						t.Fatalf("forget dropped %v, want the records of %v", dropped, model[:n+1])
					}
					delete(live, model[n].id)
					n++
				}
				if len(dropped) != n {
					t.Fatalf("forget before %d dropped %d records, want %d", before, len(dropped), n)
				}
				model = model[n:]
			case 3: // look
				id := fmt.Sprintf("n1-%d", arg*arg%97)
				seq, ok := l.lookup(id)
				if ok != live[id] {
					t.Fatalf("lookup %q: %v, remembered %v", id, ok, live[id])
				}
				if ok && l.ids.id(l.entry(seq)) != id {
					t.Fatalf("lookup %q found %q", id, l.ids.id(l.entry(seq)))
				}
			case 4: // a view, checked from then on
				view, viewed = l.view(), append([]item(nil), model...)
			}
			check(&view, viewed)
		}
		cur := l.view()
		check(&cur, model)
		if l.n != len(model) {
			t.Fatalf("table holds %d, want %d", l.n, len(model))
		}
	})
}
