package gooauth2

import (
	"fmt"
	"testing"
	"time"
)

func TestPendingCodes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := newPendingCodes(3)
	if p.take("c1", now) {
		t.Fatal("took a code that was not read")
	}
	p.read("c1", "f1", now.Add(time.Minute), now)
	if got := p.taken("f1", now); got != "" {
		t.Fatalf("taken before RemoveByCode: %q", got)
	}
	if !p.take("c1", now) {
		t.Fatal("could not take a code read")
	}
	// A second read of the same code (a concurrent exchange) keeps it
	// taken.
	p.read("c1", "f1", now.Add(time.Minute), now)
	if got := p.taken("f1", now); got != "c1" {
		t.Fatalf("taken(f1) = %q, want c1", got)
	}
	// Forgotten when it expires.
	later := now.Add(time.Minute)
	if got := p.taken("f1", later); got != "" {
		t.Fatalf("taken(f1) after expiry = %q", got)
	}
	if p.take("c1", later) {
		t.Fatal("took an expired code")
	}
	p.read("c2", "f2", later.Add(time.Minute), later)
	if n := p.len(); n != 1 {
		t.Fatalf("%d codes after the first expired, want 1", n)
	}
	// Bounded: the oldest is forgotten.
	for i := 3; i <= 5; i++ {
		p.read(fmt.Sprintf("c%d", i), fmt.Sprintf("f%d", i), later.Add(time.Minute), later)
	}
	if n := p.len(); n != 3 {
		t.Fatalf("%d codes, want the bound 3", n)
	}
	if p.take("c2", later) {
		t.Fatal("took the code the bound dropped")
	}
	for i := 3; i <= 5; i++ {
		if !p.take(fmt.Sprintf("c%d", i), later) {
			t.Fatalf("could not take c%d", i)
		}
	}
	// A code without expiry stays until the bound drops it.
	p.read("c6", "f6", time.Time{}, later)
	if !p.take("c6", later.Add(100*365*24*time.Hour)) {
		t.Fatal("could not take a code without expiry")
	}
}

// A code is forgotten once every exchange that read it has sent its
// batch: at once for one exchange, after the last of concurrent ones.
func TestPendingCodeDone(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := newPendingCodes(100)
	for i := range 1000 {
		code, family := fmt.Sprintf("c%d", i), fmt.Sprintf("f%d", i)
		p.read(code, family, now.Add(10*time.Minute), now)
		if !p.take(code, now) || p.taken(family, now) != code {
			t.Fatalf("exchange %d: the code was not taken", i)
		}
		p.done(code, family)
		if n := p.len(); n != 0 {
			t.Fatalf("after %d sequential exchanges the table holds %d codes, want 0", i+1, n)
		}
	}
	// Three exchanges of one code: it stays for the two still running.
	for range 3 {
		p.read("raced", "fr", now.Add(10*time.Minute), now)
	}
	p.take("raced", now)
	p.done("raced", "fr")
	if got := p.taken("fr", now); got != "raced" {
		t.Fatalf("taken after the first of three exchanges: %q, want the code", got)
	}
	p.done("raced", "other-family") // not its family: changes nothing
	p.done("raced", "fr")
	if got := p.taken("fr", now); got != "raced" {
		t.Fatalf("taken after the second of three exchanges: %q, want the code", got)
	}
	p.done("raced", "fr")
	if p.taken("fr", now) != "" || p.len() != 0 {
		t.Fatalf("after the last exchange: taken %q, %d codes; want none", p.taken("fr", now), p.len())
	}
	p.done("raced", "fr") // once more: nothing to forget
}

// The refresh tokens a Create consumed are remembered once each, for a
// while, at most the bound.
func TestRecentTokens(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r := newRecentTokens(3, time.Minute)
	if r.forget("rt0", now) {
		t.Fatal("forgot a token never added")
	}
	r.add("rt0", now)
	if !r.forget("rt0", now) || r.forget("rt0", now) {
		t.Fatal("a token added is forgotten exactly once")
	}
	r.add("rt1", now)
	if r.forget("rt1", now.Add(time.Minute)) {
		t.Fatal("remembered a token past its time")
	}
	for i := range 5 {
		r.add(fmt.Sprintf("rt%d", i), now)
	}
	if n := r.len(); n != 3 {
		t.Fatalf("%d tokens, want the bound 3", n)
	}
	if r.forget("rt0", now) || !r.forget("rt4", now) {
		t.Fatal("the bound drops the oldest")
	}
}

// A code a Create consumed leaves the table whatever other exchanges
// read it, and the table of spent codes takes it, taken already.
func TestPendingCodeConsumed(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p, spent := newPendingCodes(10), newPendingCodes(10)
	for range 3 {
		p.read("c1", "f1", now.Add(10*time.Minute), now)
	}
	if _, ok := p.consumed("c1", "other"); ok {
		t.Fatal("consumed a code of another family")
	}
	exp, ok := p.consumed("c1", "f1")
	if !ok || !exp.Equal(now.Add(10*time.Minute)) || p.len() != 0 {
		t.Fatalf("consumed: %v %v, %d left", exp, ok, p.len())
	}
	spent.spend("c1", "f1", now.Add(time.Minute), now)
	if spent.taken("f1", now) != "c1" || !spent.take("c1", now) {
		t.Fatal("a spent code is taken")
	}
	if spent.taken("f1", now.Add(time.Minute)) != "" {
		t.Fatal("a spent code past its time")
	}
	spent.read("c2", "f2", now.Add(time.Hour), now.Add(time.Minute))
	if n := spent.len(); n != 1 {
		t.Fatalf("%d spent codes, want 1 (the one spent expired)", n)
	}
}
