package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A JSON line carries a duration as text, as the text format does.
func TestDurationsAreText(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := New(&buf, "info", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("nonces", "window", 5*time.Minute, slog.Group("g", "wait", 1500*time.Millisecond))
		line := strings.TrimSpace(buf.String())
		if format == "text" {
			for _, want := range []string{"window=5m0s", "g.wait=1.5s"} {
				if !strings.Contains(line, want) {
					t.Errorf("text: want %q in %q", want, line)
				}
			}
			continue
		}
		var got struct {
			Window any `json:"window"`
			G      struct {
				Wait any `json:"wait"`
			} `json:"g"`
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("json: %v in %q", err, line)
		}
		if got.Window != "5m0s" || got.G.Wait != "1.5s" {
			t.Errorf("json: want window \"5m0s\" and g.wait \"1.5s\", got %#v and %#v in %q", got.Window, got.G.Wait, line)
		}
	}
}

func TestRefusesUnknownLevelAndFormat(t *testing.T) {
	for _, tc := range []struct{ level, format, want string }{
		{"loud", "text", `--log-level "loud"`},
		{"info", "xml", `--log-format "xml": want text or json`},
	} {
		if _, err := New(&bytes.Buffer{}, tc.level, tc.format); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %q): want an error naming %q, got %v", tc.level, tc.format, tc.want, err)
		}
	}
}

// Trace lines, below Debug, are named TRACE.
func TestTraceLevelName(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "debug-4", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Log(context.Background(), LevelTrace, "heartbeat")
	var got struct{ Level string }
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || got.Level != "TRACE" {
		t.Errorf("level %q (%v) in %q, want TRACE", got.Level, err, buf.String())
	}
}

func TestLevelPrefix(t *testing.T) {
	for _, c := range []struct {
		line, rest string
		level      slog.Level
	}{
		{"[WARN] memberlist: suspect n2", "memberlist: suspect n2", slog.LevelWarn},
		{"[ERR] x", "x", slog.LevelError},
		{"[ERROR]  raft: failed", "raft: failed", slog.LevelError},
		{"[TRACE] t", "t", LevelTrace},
		{"no prefix [WARN]", "no prefix [WARN]", slog.LevelInfo},
	} {
		if level, rest := LevelPrefix(c.line); level != c.level || rest != c.rest {
			t.Errorf("LevelPrefix(%q) = %v, %q; want %v, %q", c.line, level, rest, c.level, c.rest)
		}
	}
}
