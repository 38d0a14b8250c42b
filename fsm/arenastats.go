package fsm

// ArenaStats are the bytes of the state's memory outside the Go heap.
type ArenaStats struct {
	// Mapped is what the arena has mapped: the chunks the records are
	// carved from, records of their own mapping, and the index by
	// digest's table.
	Mapped int64
	// Records is the records' size classes: what of Mapped is in use.
	Records int64
	// Returned is the chunks' pages no record is in, given back to the
	// kernel: mapped, but taking no memory.
	Returned int64
}

// Arena returns the bytes of the local state's arena.
func (m *Machine) Arena() ArenaStats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	records, mapped := m.st.ar.bytesInUse()
	return ArenaStats{Mapped: mapped, Records: records, Returned: m.st.ar.bytesReturned()}
}
