// Package logging builds the slog loggers of the tokenstore commands: one
// level and one format (text or JSON) for every line a process writes.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json"). Durations are written as text
// ("5m0s") in both formats: slog's JSON handler would write nanoseconds.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: replace}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// LevelTrace is where the trace lines of Raft and memberlist land: below
// Debug, written as TRACE.
const LevelTrace = slog.LevelDebug - 4

// prefixes are the "[WARN]"-style level prefixes of libraries that log
// through the standard log package (Raft's standard loggers, memberlist).
var prefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE]", LevelTrace},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERROR]", slog.LevelError},
	{"[ERR]", slog.LevelError},
}

// LevelPrefix returns the level a line's "[WARN]"-style prefix names
// (Info without one) and the line without it.
func LevelPrefix(line string) (slog.Level, string) {
	for _, p := range prefixes {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return slog.LevelInfo, line
}

// replace writes durations as text and LevelTrace as TRACE.
func replace(groups []string, a slog.Attr) slog.Attr {
	switch {
	case a.Value.Kind() == slog.KindDuration:
		a.Value = slog.StringValue(a.Value.Duration().String())
	case len(groups) == 0 && a.Key == slog.LevelKey:
		if lv, ok := a.Value.Any().(slog.Level); ok && lv == LevelTrace {
			a.Value = slog.StringValue("TRACE")
		}
	}
	return a
}
