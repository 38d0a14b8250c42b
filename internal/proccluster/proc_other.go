//go:build !linux

package proccluster

import "os/exec"

// dieWithStarter does nothing here: only Linux kills a child when its
// parent dies. A process outlives a parent that dies without running its
// cleanups.
func dieWithStarter(*exec.Cmd) (release func()) { return func() {} }
