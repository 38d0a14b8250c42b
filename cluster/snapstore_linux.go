//go:build linux

package cluster

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// writeBehindOn: ranges of a file can be written out on their own.
const writeBehindOn = true

// writeOut starts writing the n bytes of f at off to disk, waits for the
// n bytes before them, which were started the last time, and drops those
// from the page cache.
func writeOut(f *os.File, off, n int64) error {
	fd := int(f.Fd())
	if err := unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return fmt.Errorf("snapshot write-behind: %w", err)
	}
	if off < n {
		return nil
	}
	prev := off - n
	if err := unix.SyncFileRange(fd, prev, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
		return fmt.Errorf("snapshot write-behind: %w", err)
	}
	// Advice only: a failure changes nothing that was written.
	_ = unix.Fadvise(fd, prev, n, unix.FADV_DONTNEED)
	return nil
}

// writeOutUnsupported tells whether err says the file system does not
// write ranges on their own, rather than that writing failed.
func writeOutUnsupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ESPIPE)
}
