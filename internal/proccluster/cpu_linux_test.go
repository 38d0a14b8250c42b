//go:build linux

package proccluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// statLine is a /proc/<pid>/stat line of a process named comm with the
// given utime and stime, the other fields as a sleeping process has them.
func statLine(comm string, utime, stime int) string {
	return fmt.Sprintf("4242 (%s) S 1 4242 4242 0 -1 4194560 1650 0 0 0 %d %d 0 0 20 0 9 0 1243883 "+
		"1510903808 6402 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0\n", comm, utime, stime)
}

func TestParseStatCPU(t *testing.T) {
	for _, c := range []struct {
		name, stat string
		want       uint64
	}{
		{"plain", statLine("tokenstore", 1234, 56), 1290},
		{"spaces", statLine("etcd member 1", 7, 3), 10},
		{"parentheses", statLine("a) (b) S 9 9", 100, 1), 101},
		{"closing last", statLine("x)", 0, 0), 0},
		{"empty name", statLine("", 5, 5), 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(c.stat))
			if err != nil || got != c.want {
				t.Errorf("parseStatCPU(%q) = %d, %v; want %d, nil", c.stat, got, err, c.want)
			}
		})
	}
	for _, c := range []struct{ name, stat string }{
		{"empty", ""},
		{"no parenthesis", "4242 tokenstore S 1 4242 4242 0 -1 4194560 1650 0 0 0 12 34 0 0"},
		{"cut short", "4242 (tokenstore) S 1 4242 4242 0 -1 4194560 1650 0 0 0 12"},
		{"not a number", "4242 (tokenstore) S 1 4242 4242 0 -1 4194560 1650 0 0 0 12 x4 0 0"},
		{"negative", "4242 (tokenstore) S 1 4242 4242 0 -1 4194560 1650 0 0 0 -12 34 0 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, err := parseStatCPU([]byte(c.stat)); err == nil {
				t.Errorf("parseStatCPU(%q) = %d, nil; want an error", c.stat, got)
			}
		})
	}
}

// TestClockTicks wants the auxiliary vector's USER_HZ to be what
// getconf reports, where getconf is installed.
func TestClockTicks(t *testing.T) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Skipf("getconf CLK_TCK: %v", err)
	}
	want, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("getconf CLK_TCK said %q", out)
	}
	if got := clockTicks(); got != want {
		t.Errorf("clockTicks() = %d, getconf CLK_TCK = %d", got, want)
	}
}

func TestAuxvValue(t *testing.T) {
	word := strconv.IntSize / 8
	vec := make([]byte, 0, 6*word)
	for _, v := range []uint64{6, 4096, atClkTck, 250, 0, 0} {
		vec = append(vec, encodeWord(v, word)...)
	}
	if got, ok := auxvValue(vec, atClkTck); !ok || got != 250 {
		t.Errorf("auxvValue(AT_CLKTCK) = %d, %v; want 250, true", got, ok)
	}
	if got, ok := auxvValue(vec, 33); ok {
		t.Errorf("auxvValue(33) = %d, true; want not found", got)
	}
	if _, ok := auxvValue(vec[:word], atClkTck); ok {
		t.Error("auxvValue of half an entry found something")
	}
}

func encodeWord(v uint64, word int) []byte {
	b := make([]byte, word)
	if word == 4 {
		binary.NativeEndian.PutUint32(b, uint32(v))
	} else {
		binary.NativeEndian.PutUint64(b, v)
	}
	return b
}

// TestProcCPU reads the CPU time of a shell that spins until it has used
// some: it must grow from zero, and a process that is gone has none.
func TestProcCPU(t *testing.T) {
	p, err := StartProc(t.TempDir(), "spin", "/bin/sh", "-c", "while :; do :; done")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	var used time.Duration
	err = Poll(context.Background(), 30*time.Second, 10*time.Millisecond, func(context.Context) error {
		if used, err = p.CPU(); err != nil || used == 0 {
			return fmt.Errorf("CPU() = %v, %v", used, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("a spinning shell used no CPU time in 30s: %v", err)
	}
	p.Kill()
	if got, err := p.CPU(); err == nil {
		t.Errorf("CPU() of a process that is gone = %v, nil; want an error", got)
	} else if errors.Is(err, ErrCPUNotMeasured) {
		t.Errorf("CPU() on Linux: %v", err)
	}
}
