package proccluster

import (
	"context"
	"errors"
	"testing"
)

// TestMemcachedRestartWhileRunning restarts a memcached that still runs:
// the restart fails and the running process stays the server's.
func TestMemcachedRestartWhileRunning(t *testing.T) {
	ctx := context.Background()
	m, err := StartMemcached(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("start memcached (make test installs it): %v", err)
	}
	t.Cleanup(m.Kill)
	pid := m.Pid()
	if err := m.Restart(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("Restart of a running memcached = %v, want ErrRunning", err)
	}
	if m.Pid() != pid || m.Proc().Exited() {
		t.Fatalf("after a refused Restart: pid %d (exited %v), want %d still running", m.Pid(), m.Proc().Exited(), pid)
	}
	m.Kill()
	if err := m.Restart(ctx); err != nil {
		t.Fatalf("Restart after Kill: %v", err)
	}
}
