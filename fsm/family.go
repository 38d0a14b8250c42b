package fsm

import (
	"github.com/google/btree"
)

// RevokedFamily is what the state remembers of a grant family revoked for
// good (by reuse detection or on request): when and why, and until when
// it is remembered. While it is, nothing can be issued or rotated into
// the family, whatever order concurrent exchanges of one grant apply in.
type RevokedFamily struct {
	Family string `codec:"f"`
	At     int64  `codec:"a"`
	Reason string `codec:"r,omitempty"`
	// Until is when the family is forgotten (log time): the revoking
	// command's FamilyHold after it, the longest any token of the family
	// could have been issued for.
	Until int64 `codec:"u"`
}

// families is the revoked families, by name and by when they are
// forgotten. Entries are immutable: a change stores a new one, so a
// snapshot's clone of byName keeps seeing the old.
type families struct {
	byName  *btree.BTreeG[*RevokedFamily] // family name
	byUntil *btree.BTreeG[*RevokedFamily] // (Until, name)
}

func newFamilies() families {
	return families{
		byName: btree.NewG(btreeDegree, func(a, b *RevokedFamily) bool { return a.Family < b.Family }),
		byUntil: btree.NewG(btreeDegree, func(a, b *RevokedFamily) bool {
			return a.Until < b.Until || a.Until == b.Until && a.Family < b.Family
		}),
	}
}

// clone returns a copy of fs that later changes of either do not reach
// (the trees are copy-on-write).
func (fs *families) clone() families {
	return families{byName: fs.byName.Clone(), byUntil: fs.byUntil.Clone()}
}

// revoked returns the remembered revocation of family at now, or nil.
func (fs *families) revoked(family string, now int64) *RevokedFamily {
	if family == "" || fs.byName.Len() == 0 {
		return nil
	}
	f, _ := fs.byName.Get(&RevokedFamily{Family: family})
	if f == nil || f.Until <= now {
		return nil
	}
	return f
}

// remember notes family as revoked at now for hold; a family revoked again
// keeps its first time and reason and is remembered for the longer hold.
func (fs *families) remember(family string, now int64, reason string, hold int64) {
	if family == "" || hold <= 0 {
		return
	}
	f := &RevokedFamily{Family: family, At: now, Reason: reason, Until: now + hold}
	if f.Until < now { // overflow: remember for ever
		f.Until = 1<<63 - 1
	}
	if old, ok := fs.byName.Get(f); ok {
		if old.Until >= f.Until {
			return
		}
		f.At, f.Reason = old.At, old.Reason
		fs.byUntil.Delete(old)
	}
	fs.put(f)
}

func (fs *families) put(f *RevokedFamily) {
	fs.byName.ReplaceOrInsert(f)
	fs.byUntil.ReplaceOrInsert(f)
}

// forget drops the families remembered until now or before.
func (fs *families) forget(now int64) {
	var due []*RevokedFamily
	fs.byUntil.Ascend(func(f *RevokedFamily) bool {
		if f.Until > now {
			return false
		}
		due = append(due, f)
		return true
	})
	for _, f := range due {
		fs.byUntil.Delete(f)
		fs.byName.Delete(f)
	}
}

// RevokedFamilies returns how many revoked families the state remembers.
func (m *Machine) RevokedFamilies() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.families.byName.Len()
}
