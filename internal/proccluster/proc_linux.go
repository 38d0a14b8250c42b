//go:build linux

package proccluster

import (
	"os/exec"
	"runtime"
	"syscall"
)

// dieWithStarter asks the kernel to SIGKILL the process cmd starts when
// its parent dies, so that no server outlives a test binary that panics
// on its timeout or a benchmark killed with SIGKILL, whose cleanups never
// run. It must be called on the goroutine that starts and waits for the
// process, and release called once the process is gone.
//
// The kernel's "parent" is the thread that forked the child, not the
// process (prctl(2), PR_SET_PDEATHSIG; golang/go#27505): the Go runtime
// ends a thread whose goroutine exits while locked to it, as
// internal/netem's namespace switch does when it cannot switch back, and
// a child forked from such a thread would be killed with it. The calling
// goroutine is therefore locked to its thread until release, which holds
// one OS thread per running process. Only the process itself is tied;
// processes it forks are not.
func dieWithStarter(cmd *exec.Cmd) (release func()) {
	runtime.LockOSThread()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return runtime.UnlockOSThread
}
