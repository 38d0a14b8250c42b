package load

import (
	"fmt"
	"time"
)

// ServerCPU is the CPU time, user and system, that the server processes
// of a system used while one operation was timed: each process is read
// before and after the window and the differences are summed. On Linux
// the bench reads /proc/<pid>/stat, whose unit is the clock tick (10 ms),
// so a short window has a coarse total.
type ServerCPU struct {
	Total time.Duration `json:"total_ns"`
	// PerOp is Total over the operations the window completed, in µs.
	PerOp float64 `json:"us_per_op"`
	// Procs is each process's part of Total, by process name.
	Procs map[string]time.Duration `json:"procs_ns"`
}

// NewServerCPU is the CPU the processes used between two readings,
// before and after, over ops operations. A process missing from either
// reading is left out.
func NewServerCPU(before, after map[string]time.Duration, ops int) *ServerCPU {
	c := &ServerCPU{Procs: map[string]time.Duration{}}
	for name, b := range before {
		a, ok := after[name]
		if !ok {
			continue
		}
		c.Procs[name] = a - b
		c.Total += a - b
	}
	if ops > 0 {
		c.PerOp = float64(c.Total) / float64(time.Microsecond) / float64(ops)
	}
	return c
}

// cpuPerOp is r's server CPU per operation for a table, "-" when it was
// not measured.
func cpuPerOp(r *Result) string {
	if r.ServerCPU == nil || r.Ops == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fµs", r.ServerCPU.PerOp)
}
