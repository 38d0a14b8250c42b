//go:build linux

package proccluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// parentEnv, when set, makes TestKilledWithParent the parent it kills:
// it starts a child in the directory named and waits to be killed.
const parentEnv = "PROCCLUSTER_TEST_PARENT_DIR"

// TestKilledWithParent kills, with SIGKILL, a process that started a
// child through StartProc, so that no cleanup runs: the child dies too.
func TestKilledWithParent(t *testing.T) {
	if dir := os.Getenv(parentEnv); dir != "" {
		p, err := StartProc(dir, "child", "/bin/sh", "-c", "exec sleep 300")
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("pid", p.Pid())
		os.Stdin.Read(make([]byte, 1)) // until killed: the test never writes
		os.Exit(1)
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestKilledWithParent$", "-test.count=1")
	parent.Env = append(os.Environ(), parentEnv+"="+t.TempDir())
	stdin, err := parent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Process.Kill(); parent.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var pid int
	if _, serr := fmt.Sscanf(line, "pid %d", &pid); serr != nil {
		t.Fatalf("the parent did not say its child's pid: %q, %v", line, err)
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	err = Poll(context.Background(), 30*time.Second, 10*time.Millisecond, func(context.Context) error {
		// Gone, or a zombie that whoever adopted it has yet to reap.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(b, ')'); err != nil || (i > 0 && i+2 < len(b) && b[i+2] == 'Z') {
			return nil
		}
		return errors.New("still running")
	})
	if err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the child (pid %d) outlived its killed parent: %v", pid, err)
	}
}
