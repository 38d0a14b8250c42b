package gooauth2

import (
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
}

// pendingCodes is a process-local table of codes being exchanged, by
// family and by code string. It forgets a code when the code expires,
// and the oldest code when it is full: an exchange of a code forgotten
// before its Create answers invalid_grant.
type pendingCodes struct {
	mu       sync.Mutex
	max      int
	families map[string]*pendingCode
	codes    map[string]*pendingCode
	queue    []*pendingCode // in the order of first reads
}

func newPendingCodes(max int) *pendingCodes {
	if max <= 0 {
		max = DefaultPendingCodes
	}
	return &pendingCodes{
		max: max, families: make(map[string]*pendingCode), codes: make(map[string]*pendingCode),
	}
}

// read notes code, of family, as read by GetByCode.
func (p *pendingCodes) read(code, family string, expires, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire(now)
	if e := p.codes[code]; e != nil {
		return // another exchange of the same code read it already
	}
	for len(p.queue) >= p.max {
		p.drop(p.queue[0])
		p.queue[0] = nil
		p.queue = p.queue[1:]
	}
	e := &pendingCode{code: code, family: family, expires: expires}
	if old := p.families[family]; old != nil {
		delete(p.codes, old.code) // a family has one code
	}
	p.codes[code], p.families[family] = e, e
	p.queue = append(p.queue, e)
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

// expire forgets the codes at the front of the queue that have expired.
// Codes are read in about the order they expire (one code lifetime), so
// this drops every expired code but a few.
func (p *pendingCodes) expire(now time.Time) {
	for len(p.queue) > 0 && p.queue[0].expired(now) {
		p.drop(p.queue[0])
		p.queue[0] = nil
		p.queue = p.queue[1:]
	}
}

func (p *pendingCodes) drop(e *pendingCode) {
	if p.codes[e.code] == e {
		delete(p.codes, e.code)
	}
	if p.families[e.family] == e {
		delete(p.families, e.family)
	}
}

func (p *pendingCodes) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.codes)
}

func (e *pendingCode) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}
