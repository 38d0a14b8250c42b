package gooauth2

import (
	"container/list"
	"sync"
	"time"
)

// DefaultPendingCodes bounds the codes a TokenStore remembers between
// GetByCode and Create unless WithPendingCodes says otherwise.
const DefaultPendingCodes = 10000

// pendingCode is a code read by GetByCode, in memory only: the exchange
// that reads it consumes it in Create's batch, which needs the code
// string, and Create knows only the grant's family.
type pendingCode struct {
	code, family string
	expires      time.Time // the code's expiry; zero: the kind's TTL, unknown here
	taken        bool      // RemoveByCode has been called for it
	// readers counts the exchanges that read it and have not yet sent
	// Create's batch: concurrent exchanges of one code share the entry,
	// and each loser's batch must still find the code, so that its
	// consume detects the reuse and revokes the grant.
	readers int
	elem    *list.Element
}

// pendingCodes is a process-local table of codes being exchanged, by
// family and by code string. It forgets a code once a Create's batch
// consumed it (consumed, whatever other exchanges read it), once every
// exchange that read it had a definite answer to its batch otherwise
// (done), when the code expires, and the oldest code when it is full: an
// exchange of a code forgotten before its Create answers invalid_grant.
// An exchange that fails before Create (a wrong PKCE verifier, another
// client) cannot be seen here: the code it read stays until one of those.
//
// The codes a Create consumed are kept a while (spentGrace) in a second
// table, taken already (spend): an exchange that read the code before the
// winning batch applied still finds it, and its batch's consume detects
// the reuse, which revokes the grant.
type pendingCodes struct {
	mu       sync.Mutex
	max      int
	families map[string]*pendingCode
	codes    map[string]*pendingCode
	queue    *list.List // of *pendingCode, in the order of first reads
}

func newPendingCodes(max int) *pendingCodes {
	if max <= 0 {
		max = DefaultPendingCodes
	}
	return &pendingCodes{
		max: max, families: make(map[string]*pendingCode), codes: make(map[string]*pendingCode), queue: list.New(),
	}
}

// read notes code, of family, as read by GetByCode.
func (p *pendingCodes) read(code, family string, expires, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	if e := p.codes[code]; e != nil {
		e.readers++ // another exchange of the same code read it already
		return
	}
	if old := p.families[family]; old != nil {
		p.drop(old) // a family has one code
	}
	for p.queue.Len() >= p.max {
		p.drop(p.queue.Front().Value.(*pendingCode))
	}
	e := &pendingCode{code: code, family: family, expires: expires, readers: 1}
	p.codes[code], p.families[family] = e, e
	e.elem = p.queue.PushBack(e)
}

// take notes code as taken by an exchange; false if it was not read.
func (p *pendingCodes) take(code string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.codes[code]
	if e == nil || e.expired(now) {
		return false
	}
	e.taken = true
	return true
}

// taken returns the code of family that an exchange took, or "".
func (p *pendingCodes) taken(family string, now time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.families[family]
	if e == nil || !e.taken || e.expired(now) {
		return ""
	}
	return e.code
}

// done notes that an exchange of code, of family, is over: its Create
// sent the batch that consumes the code, and the answer was definite.
// Once every exchange that read the code is over, it is forgotten.
func (p *pendingCodes) done(code, family string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.codes[code]; e != nil && e.family == family {
		if e.readers--; e.readers <= 0 {
			p.drop(e)
		}
	}
}

// consumed forgets code, of family, whatever other exchanges read it: a
// Create's batch consumed it. It returns the code's expiry (zero: not
// known), and false if the table did not hold it.
func (p *pendingCodes) consumed(code, family string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.codes[code]
	if e == nil || e.family != family {
		return time.Time{}, false
	}
	p.drop(e)
	return e.expires, true
}

// spend notes code, of family, as taken until until: a table of codes
// consumed already.
func (p *pendingCodes) spend(code, family string, until, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	if old := p.codes[code]; old != nil {
		p.drop(old)
	}
	if old := p.families[family]; old != nil {
		p.drop(old)
	}
	for p.queue.Len() >= p.max {
		p.drop(p.queue.Front().Value.(*pendingCode))
	}
	e := &pendingCode{code: code, family: family, expires: until, taken: true}
	p.codes[code], p.families[family] = e, e
	e.elem = p.queue.PushBack(e)
}

// expire forgets the codes at the front of the queue that have expired.
// Codes are read in about the order they expire (one code lifetime), so
// this drops every expired code but a few.
func (p *pendingCodes) expire(now time.Time) {
	for p.queue.Len() > 0 && p.queue.Front().Value.(*pendingCode).expired(now) {
		p.drop(p.queue.Front().Value.(*pendingCode))
	}
}

// drop forgets e: from the maps and the queue.
func (p *pendingCodes) drop(e *pendingCode) {
	if p.codes[e.code] == e {
		delete(p.codes, e.code)
	}
	if p.families[e.family] == e {
		delete(p.families, e.family)
	}
	if e.elem != nil {
		p.queue.Remove(e.elem)
		e.elem = nil
	}
}

// len returns how many codes the table holds, and checks that its maps
// and queue agree (-1 if not).
func (p *pendingCodes) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.families) != len(p.codes) || p.queue.Len() != len(p.codes) {
		return -1
	}
	return len(p.codes)
}

func (e *pendingCode) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}
