package proccluster

import (
	"testing"
	"time"
)

func TestLogTime(t *testing.T) {
	got := logTime(`time=2026-12-01T11:01:37.701Z level=INFO msg="starting snapshot up to" module=raft index=96`)
	if want := time.Date(2026, 12, 1, 11, 1, 37, 701e6, time.UTC); !got.Equal(want) {
		t.Errorf("logTime = %v, want %v", got, want)
	}
	if got := logTime("no time here"); !got.IsZero() {
		t.Errorf("logTime of a line without a time = %v, want zero", got)
	}
}
