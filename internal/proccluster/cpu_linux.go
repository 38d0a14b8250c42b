//go:build linux

package proccluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// processCPU is utime + stime of pid, all its threads together, from
// /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	ticks, err := parseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / time.Duration(clockTicks()), nil
}

// parseStatCPU returns utime + stime, in clock ticks, from the text of
// /proc/<pid>/stat (proc(5)). The second field, the command name in
// parentheses, may itself hold spaces and parentheses, so the fields are
// counted from the last ')': the state (field 3) comes first, utime and
// stime are fields 14 and 15.
func parseStatCPU(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no ')' closing the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("%d fields after the command name, want at least %d", len(f), stime+1)
	}
	u, err := strconv.ParseUint(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	s, err := strconv.ParseUint(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return u + s, nil
}

// clockTicks is the kernel's USER_HZ, the unit of utime and stime: the
// AT_CLKTCK entry of the auxiliary vector the kernel gave this process,
// which is what sysconf(_SC_CLK_TCK) answers in C. If that cannot be read,
// 100: its value on every architecture Go runs Linux on.
var clockTicks = sync.OnceValue(func() uint64 {
	if b, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if hz, ok := auxvValue(b, atClkTck); ok && hz > 0 {
			return hz
		}
	}
	return 100
})

// atClkTck is the auxiliary vector's key of USER_HZ (<elf.h>).
const atClkTck = 17

// auxvValue finds key in an auxiliary vector: pairs of native-endian
// words, type then value, ended by a zero type.
func auxvValue(b []byte, key uint64) (uint64, bool) {
	word := strconv.IntSize / 8
	read := func(p []byte) uint64 {
		if word == 4 {
			return uint64(binary.NativeEndian.Uint32(p))
		}
		return binary.NativeEndian.Uint64(p)
	}
	for ; len(b) >= 2*word; b = b[2*word:] {
		switch read(b) {
		case 0:
			return 0, false
		case key:
			return read(b[word:]), true
		}
	}
	return 0, false
}
