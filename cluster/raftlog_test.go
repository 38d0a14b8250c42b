package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/tokenstore/tokenstore/internal/logging"
)

// records is a slog handler that keeps every record it is given, with
// the attributes of With, at or above min.
type records struct {
	min   slog.Level
	attrs []slog.Attr
	mu    *sync.Mutex
	recs  *[]record
}

type record struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func newRecords(min slog.Level) *records {
	return &records{min: min, mu: &sync.Mutex{}, recs: &[]record{}}
}

func (h *records) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *records) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, rec)
	return nil
}

func (h *records) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clip(h.attrs), as...)
	return &c
}

func (h *records) WithGroup(string) slog.Handler { return h }

func (h *records) all() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.recs)
}

func TestRaftLoggerLevels(t *testing.T) {
	h := newRecords(slog.LevelDebug)
	l := newRaftLogger(slog.New(h), "raft")
	l.Trace("t")
	l.Debug("d")
	l.Info("i")
	l.Warn("w")
	l.Error("e")
	l.Log(hclog.NoLevel, "none")
	l.Log(hclog.Off, "off")
	want := []struct {
		msg   string
		level slog.Level
	}{{"d", slog.LevelDebug}, {"i", slog.LevelInfo}, {"w", slog.LevelWarn}, {"e", slog.LevelError}, {"none", slog.LevelInfo}}
	got := h.all()
	if len(got) != len(want) {
		t.Fatalf("a handler at DEBUG got %d lines %v; want %d (no trace, nothing at Off)", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].msg != w.msg || got[i].level != w.level {
			t.Errorf("line %d: got %q at %s; want %q at %s", i, got[i].msg, got[i].level, w.msg, w.level)
		}
	}

	trace := newRecords(logging.LevelTrace)
	newRaftLogger(slog.New(trace), "raft").Trace("t")
	if got := trace.all(); len(got) != 1 || got[0].level >= slog.LevelDebug {
		t.Errorf("a handler below DEBUG: trace logged as %v; want one line below DEBUG", got)
	}

	for _, tc := range []struct {
		min  slog.Level
		want hclog.Level
		is   map[string]bool
	}{
		{logging.LevelTrace, hclog.Trace, map[string]bool{"trace": true, "debug": true, "info": true, "warn": true, "error": true}},
		{slog.LevelDebug, hclog.Debug, map[string]bool{"trace": false, "debug": true, "info": true, "warn": true, "error": true}},
		{slog.LevelWarn, hclog.Warn, map[string]bool{"trace": false, "debug": false, "info": false, "warn": true, "error": true}},
		{slog.LevelError + 1, hclog.Off, map[string]bool{"trace": false, "debug": false, "info": false, "warn": false, "error": false}},
	} {
		l := newRaftLogger(slog.New(newRecords(tc.min)), "raft")
		l.SetLevel(hclog.Trace) // the handler decides, not the logger
		if got := l.GetLevel(); got != tc.want {
			t.Errorf("handler at %s: GetLevel %s; want %s", tc.min, got, tc.want)
		}
		got := map[string]bool{"trace": l.IsTrace(), "debug": l.IsDebug(), "info": l.IsInfo(), "warn": l.IsWarn(), "error": l.IsError()}
		for k, w := range tc.is {
			if got[k] != w {
				t.Errorf("handler at %s: Is%s %v; want %v", tc.min, k, got[k], w)
			}
		}
	}
}

func TestRaftLoggerNamesAndAttributes(t *testing.T) {
	h := newRecords(slog.LevelDebug)
	base := newRaftLogger(slog.New(h).With("node", "n1"), "raft")
	snap := base.Named("snapshot").With("id", "s1", 7)
	if got := snap.Name(); got != "raft.snapshot" {
		t.Errorf("Named: name %q; want raft.snapshot", got)
	}
	// A value without a key gets hclog's MissingKey, so pairs stay aligned.
	if got := snap.ImpliedArgs(); !slices.Equal(got, []any{"id", "s1", hclog.MissingKey, 7}) {
		t.Errorf("ImpliedArgs: %v; want [id s1 %s 7]", got, hclog.MissingKey)
	}
	boom := errors.New("boom")
	snap.Info("restored", "took", 5*time.Minute, "err", boom, "size", 42, "addr", hclog.Quote("a b"),
		"mode", hclog.Octal(8), "fmt", hclog.Format{"%d-%s", 1, "x"}, "who", (*panicky)(nil), "odd")
	snap.ResetNamed("other").Warn("w")
	unnamed := newRaftLogger(slog.New(h), "")
	unnamed.Debug("d")
	if got := unnamed.Named("x").Name(); got != "x" {
		t.Errorf("Named on an unnamed logger: %q; want x", got)
	}

	got := h.all()
	if len(got) != 3 {
		t.Fatalf("got %d lines; want 3: %v", len(got), got)
	}
	r := got[0]
	want := map[string]string{
		"node": "n1", "module": "raft.snapshot", "id": "s1", hclog.MissingKey: "odd",
		"took": "5m0s", "err": "boom", "size": "42", "addr": "a b", "mode": "010", "fmt": "1-x", "who": "<nil>",
	}
	for k, w := range want {
		if v, ok := r.attrs[k]; !ok || v.String() != w {
			t.Errorf("attribute %s: %v (present %v); want %q", k, v, ok, w)
		}
	}
	if r.attrs["took"].Kind() != slog.KindDuration {
		t.Errorf("a time.Duration value reached slog as %s; want a duration, for the handler to write", r.attrs["took"].Kind())
	}
	if r.attrs["size"].Kind() != slog.KindInt64 {
		t.Errorf("an int value reached slog as %s; want an int", r.attrs["size"].Kind())
	}
	if got[1].attrs["module"].String() != "other" || got[1].attrs["id"].String() != "s1" || got[1].level != slog.LevelWarn {
		t.Errorf("ResetNamed: %+v; want module other, the pairs of With kept, at WARN", got[1])
	}
	if m, ok := got[2].attrs["module"]; ok {
		t.Errorf("an unnamed logger's line has module %q; want none", m)
	}
}

// panicky's String panics on a nil pointer, as many a String method does.
type panicky struct{ s string }

func (p *panicky) String() string { return p.s }

func TestRaftLoggerStandardWriter(t *testing.T) {
	h := newRecords(logging.LevelTrace)
	l := newRaftLogger(slog.New(h), "raft")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] careful")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true}).Print("2026/01/02 10:00:00 [ERR] broke")
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}).Print("[ERROR] forced")
	l.StandardWriter(nil).Write([]byte("[WARN] as is\n"))
	want := []struct {
		msg   string
		level slog.Level
	}{{"careful", slog.LevelWarn}, {"broke", slog.LevelError}, {"forced", slog.LevelDebug}, {"[WARN] as is", slog.LevelInfo}}
	got := h.all()
	if len(got) != len(want) {
		t.Fatalf("got %d lines %v; want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].msg != w.msg || got[i].level != w.level || got[i].attrs["module"].String() != "raft" {
			t.Errorf("line %d: %q at %s, module %q; want %q at %s, module raft", i, got[i].msg, got[i].level, got[i].attrs["module"], w.msg, w.level)
		}
	}
}

// A node whose logger writes JSON writes only JSON, Raft's lines with the
// same keys as its own.
func TestRaftLinesAreTheNodesJSON(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	logger := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := Open(Config{DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for n.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", n.Ready())
		}
		<-time.After(20 * time.Millisecond)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	raft := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a line that is not JSON: %q: %v", line, err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k].(string); !ok {
				t.Errorf("a line without a %q string: %s", k, line)
			}
		}
		if k := repeatedKey(t, line); k != "" {
			t.Errorf("a line with the key %q twice: %s", k, line)
		}
		if m["module"] == "raft" {
			raft++
		}
	}
	if raft == 0 {
		t.Fatalf("no line with module raft in:\n%s", out)
	}
}

// repeatedKey returns a top-level key that the JSON object line holds
// more than once, "" if none does.
func repeatedKey(t *testing.T, line string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil { // {
		t.Fatalf("%q: %v", line, err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		key := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
	}
	return ""
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
