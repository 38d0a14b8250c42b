package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/tokenstore/tokenstore/internal/logging"
)

// raftLogger is the hclog.Logger that hashicorp/raft logs through. It
// writes into the node's slog.Logger, so Raft's lines come out of the
// node's handler with the node's keys (time, level, msg) and are JSON
// whenever the node's are. The logger's name is the "module" attribute;
// the key/value pairs are attributes, their values kept as they are
// where slog has a kind for them (a time.Duration stays a duration).
// Which levels are logged is the handler's decision: SetLevel does
// nothing.
type raftLogger struct {
	log     *slog.Logger // with the implied pairs as attributes
	name    string
	implied []any
}

// newRaftLogger returns an hclog.Logger named name that writes into l.
func newRaftLogger(l *slog.Logger, name string) hclog.Logger {
	return &raftLogger{log: l, name: name}
}

// slogLevel maps an hclog level onto slog's; NoLevel is hclog's default,
// Info.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return logging.LevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (l *raftLogger) enabled(level hclog.Level) bool {
	return level != hclog.Off && l.log.Enabled(context.Background(), slogLevel(level))
}

// Log writes one line at level, unless the handler leaves that level out.
func (l *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	if level != hclog.Off {
		l.logAt(slogLevel(level), msg, args...)
	}
}

// logAt writes one line at the slog level lv, unless the handler leaves
// it out.
func (l *raftLogger) logAt(lv slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), lv) {
		return
	}
	attrs := make([]slog.Attr, 0, 1+len(args)/2)
	if l.name != "" {
		attrs = append(attrs, slog.String("module", l.name))
	}
	attrs = append(attrs, pairs(args)...)
	l.log.LogAttrs(context.Background(), lv, msg, attrs...)
}

// Trace logs at logging.LevelTrace.
func (l *raftLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }

// Debug logs at slog.LevelDebug.
func (l *raftLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }

// Info logs at slog.LevelInfo.
func (l *raftLogger) Info(msg string, args ...any) { l.Log(hclog.Info, msg, args...) }

// Warn logs at slog.LevelWarn.
func (l *raftLogger) Warn(msg string, args ...any) { l.Log(hclog.Warn, msg, args...) }

// Error logs at slog.LevelError.
func (l *raftLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

// IsTrace reports whether the handler takes logging.LevelTrace.
func (l *raftLogger) IsTrace() bool { return l.enabled(hclog.Trace) }

// IsDebug reports whether the handler takes slog.LevelDebug.
func (l *raftLogger) IsDebug() bool { return l.enabled(hclog.Debug) }

// IsInfo reports whether the handler takes slog.LevelInfo.
func (l *raftLogger) IsInfo() bool { return l.enabled(hclog.Info) }

// IsWarn reports whether the handler takes slog.LevelWarn.
func (l *raftLogger) IsWarn() bool { return l.enabled(hclog.Warn) }

// IsError reports whether the handler takes slog.LevelError.
func (l *raftLogger) IsError() bool { return l.enabled(hclog.Error) }

// ImpliedArgs returns the pairs given to With.
func (l *raftLogger) ImpliedArgs() []any { return slices.Clone(l.implied) }

// With returns a logger that adds args to every line.
func (l *raftLogger) With(args ...any) hclog.Logger {
	attrs := pairs(args)
	as := make([]any, len(attrs))
	for i, a := range attrs {
		as[i] = a
	}
	implied := append(slices.Clip(l.implied), args...)
	if len(args)%2 == 1 {
		// A value without a key gets hclog's MissingKey, as in a line, so
		// the next With's pairs stay aligned.
		implied = slices.Insert(implied, len(implied)-1, any(hclog.MissingKey))
	}
	return &raftLogger{log: l.log.With(as...), name: l.name, implied: implied}
}

// Name returns the logger's name, "" if it has none.
func (l *raftLogger) Name() string { return l.name }

// Named returns a logger whose name is this one's with name appended,
// as hclog joins them: "raft.snapshot".
func (l *raftLogger) Named(name string) hclog.Logger {
	if l.name != "" {
		name = l.name + "." + name
	}
	return &raftLogger{log: l.log, name: name, implied: l.implied}
}

// ResetNamed returns a logger named name.
func (l *raftLogger) ResetNamed(name string) hclog.Logger {
	return &raftLogger{log: l.log, name: name, implied: l.implied}
}

// SetLevel does nothing: the slog handler decides what is logged.
func (l *raftLogger) SetLevel(hclog.Level) {}

// GetLevel returns the lowest level the handler takes, hclog.Off if none.
func (l *raftLogger) GetLevel() hclog.Level {
	for _, level := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if l.enabled(level) {
			return level
		}
	}
	return hclog.Off
}

// StandardLogger returns a standard library logger whose lines this
// logger writes, as StandardWriter.
func (l *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each write as one line: at
// Info, at opts.ForceLevel when set, or at the level its "[WARN]"-style
// prefix names with opts.InferLevels. A level prefix is stripped.
func (l *raftLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{l: l, opts: *opts}
}

type stdWriter struct {
	l    *raftLogger
	opts hclog.StandardLoggerOptions
}

// leadingTimestamp matches what a timestamp at the start of a line is
// made of, as hclog's own adapter does.
var leadingTimestamp = regexp.MustCompile(`^[\d\s:/.+\-TZ]*`)

func (w *stdWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), " \t\n")
	switch {
	case w.opts.ForceLevel != hclog.NoLevel:
		_, line = logging.LevelPrefix(line)
		w.l.Log(w.opts.ForceLevel, line)
	case w.opts.InferLevels:
		if w.opts.InferLevelsWithTimestamp {
			line = leadingTimestamp.ReplaceAllString(line, "")
		}
		w.l.logAt(logging.LevelPrefix(line))
	default:
		w.l.Log(hclog.Info, line)
	}
	return len(p), nil
}

// pairs turns hclog's alternating keys and values into attributes. A
// value without a key is kept under hclog.MissingKey; a trailing
// captured stack trace under "stacktrace".
func pairs(args []any) []slog.Attr {
	var stack []slog.Attr
	if len(args)%2 == 1 {
		last := args[len(args)-1]
		args = slices.Clip(args[:len(args)-1]) // the append below must not write into the caller's array
		if st, ok := last.(hclog.CapturedStacktrace); ok {
			stack = []slog.Attr{slog.String("stacktrace", string(st))}
		} else {
			args = append(args, hclog.MissingKey, last)
		}
	}
	attrs := make([]slog.Attr, 0, len(args)/2+len(stack))
	for i := 0; i < len(args); i += 2 {
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		attrs = append(attrs, slog.Any(key, value(args[i+1])))
	}
	return append(attrs, stack...)
}

// value is what a Raft log value becomes in slog: hclog's formatting
// types are formatted as hclog formats them; errors, durations and times
// stay as they are, for the handler to write; any other fmt.Stringer (a
// *raft.Raft, a suffrage) is its String, which a JSON handler would
// otherwise marshal as a struct or a number. The rest stays as it is.
func value(v any) any {
	switch x := v.(type) {
	case hclog.Format:
		if len(x) > 0 {
			if f, ok := x[0].(string); ok {
				return fmt.Sprintf(f, x[1:]...)
			}
		}
		return fmt.Sprint(x...)
	case hclog.Hex:
		return "0x" + strconv.FormatUint(uint64(x), 16)
	case hclog.Octal:
		return "0" + strconv.FormatUint(uint64(x), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatUint(uint64(x), 2)
	case hclog.Quote:
		return string(x)
	case error, time.Duration, time.Time:
		return x
	case fmt.Stringer:
		return fmt.Sprint(x) // "<nil>" for a nil pointer, where String would panic
	}
	return v
}
