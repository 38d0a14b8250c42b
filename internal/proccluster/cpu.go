package proccluster

import (
	"errors"
	"time"
)

// ErrCPUNotMeasured is answered where a process's CPU time cannot be read
// (outside Linux).
var ErrCPUNotMeasured = errors.New("proccluster: process CPU time not measured on this system")

// CPU is the CPU time, user and system, that all threads of the process
// have used since it started; ErrCPUNotMeasured outside Linux.
func (p *Proc) CPU() (time.Duration, error) { return processCPU(p.Pid()) }
