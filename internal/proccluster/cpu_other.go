//go:build !linux

package proccluster

import "time"

// processCPU is not measured here: there is no /proc to read it from.
func processCPU(int) (time.Duration, error) { return 0, ErrCPUNotMeasured }
