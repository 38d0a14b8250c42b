package proccluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestProc runs shell processes: ready once they say so, paused and
// resumed, stopped by SIGTERM with a clean exit, killed, and one that
// exits before it is ready, its log in the error.
func TestProc(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p, err := StartProc(dir, "loop", "/bin/sh", "-c", `trap 'echo terminated; exit 0' TERM; echo started; while :; do sleep 0.05; done`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	saidStarted := func(context.Context) error {
		if !strings.Contains(p.Log(), "started") {
			return errors.New("no start line yet")
		}
		return nil
	}
	if err := p.WaitUntil(ctx, 30*time.Second, saidStarted); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := p.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if rss, err := p.RSS(); err != nil || rss <= 0 {
		t.Errorf("RSS = %d, %v; want a positive size", rss, err)
	}
	if err := p.Stop(30 * time.Second); err != nil || !p.Exited() {
		t.Fatalf("Stop: %v (exited %v); want a clean exit", err, p.Exited())
	}
	if !strings.Contains(p.LogTail(1), "terminated") {
		t.Errorf("want the trap's line last in the log, got %q", p.Log())
	}

	k, err := StartProc(dir, "sleep", "/bin/sh", "-c", "exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	k.Kill()
	if !k.Exited() {
		t.Error("Kill returned before the process was gone")
	}

	q, err := StartProc(dir, "quitter", "/bin/sh", "-c", "echo giving up; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = q.WaitUntil(ctx, 30*time.Second, func(context.Context) error { return errors.New("never ready") })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "giving up") {
		t.Errorf("a process that exits at once: want an error saying so with its log, got %v", err)
	}
}

func TestFreeAddrs(t *testing.T) {
	addrs, err := FreeAddrs(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] || !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("%q: want distinct 127.0.0.1 addresses, got %q", a, addrs)
		}
		seen[a] = true
	}
}

// TestFreeAddrsAcrossCalls asks for many ports, a few at a time: none is
// handed out twice.
func TestFreeAddrsAcrossCalls(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		addrs, err := FreeAddrs(5)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if seen[a] {
				t.Fatalf("%s handed out twice", a)
			}
			seen[a] = true
		}
	}
}

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), 10*time.Second, time.Millisecond, func(context.Context) error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("Poll = %v after %d calls; want nil after 3", err, calls)
	}
	want := errors.New("never")
	if err := Poll(context.Background(), 20*time.Millisecond, time.Millisecond, func(context.Context) error { return want }); err != want {
		t.Errorf("Poll past its deadline = %v, want the condition's last error", err)
	}
}

// TestStopPaused stops a paused process that handles SIGTERM: Stop
// continues it, so it exits through its handler instead of being killed
// once the grace has passed.
func TestStopPaused(t *testing.T) {
	p, err := StartProc(t.TempDir(), "paused", "/bin/sh", "-c", `trap 'echo terminated; exit 0' TERM; echo started; while :; do sleep 0.05; done`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	err = p.WaitUntil(context.Background(), 30*time.Second, func(context.Context) error {
		if !strings.Contains(p.Log(), "started") {
			return errors.New("no start line yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Fatalf("Stop of a paused process: %v; want a clean exit through its SIGTERM handler", err)
	}
	if !strings.Contains(p.LogTail(1), "terminated") {
		t.Errorf("want the trap's line last in the log, got %q", p.Log())
	}
}
