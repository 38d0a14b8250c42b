package load

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/token"
)

// Session is what an application server writes for a login: an access
// token of a user, through one of its clients, with the device it came
// from. The live tokens of a scale are these.
type Session struct {
	Subject   string // user:N
	ClientID  string
	Title     string // about 12 characters
	IP        string
	UserAgent string // about 60 characters
}

// sessionUsers is how many users the sessions of a run belong to: ten
// sessions each at a million.
const sessionUsers = 100_000

var (
	sessionClients = []string{"web-app", "ios-app", "android-app", "partner-portal"}
	// sessionAgents are user agents of about 60 characters; with the
	// versions below, 64 different strings.
	sessionAgents = []struct{ title, format string }{
		{"Chrome on Mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/%d.0"},
		{"Chrome on Win", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/%d.0.0.0"},
		{"Safari iPhone", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) %d.0"},
		{"Firefox Linux", "Mozilla/5.0 (X11; Linux x86_64; rv:%d.0) Gecko Firefox/%d.0"},
		{"Edge on Win11", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/%d.0.2365.52"},
		{"Android Phone", "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Chrome/%d.0"},
		{"iPad Safari 1", "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Version/%d.0"},
		{"Chrome on CrOS", "Mozilla/5.0 (X11; CrOS x86_64 15633.69.0) Chrome/%d.0.0.0"},
	}
)

// SessionOf is the i-th session of a run: users, clients, devices and
// addresses spread by i alone, so every run writes the same records.
func SessionOf(i int64) Session {
	h := uint64(i)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	h ^= h >> 29
	a := sessionAgents[h%uint64(len(sessionAgents))]
	version := 118 + int(h>>8%8)
	ua := fmt.Sprintf(a.format, version)
	if a.title == "Firefox Linux" {
		ua = fmt.Sprintf(a.format, version, version)
	}
	return Session{
		Subject:   "user:" + strconv.FormatInt(int64(h>>16%sessionUsers), 10),
		ClientID:  sessionClients[h>>40%uint64(len(sessionClients))],
		Title:     a.title,
		IP:        fmt.Sprintf("10.%d.%d.%d", h>>24&0xff, h>>32&0xff, 1+h>>48%254),
		UserAgent: ua,
	}
}

// A SessionIssuer stores sessions, for Preload; a Target that is not one
// is preloaded with Issue.
type SessionIssuer interface {
	// IssueSession stores s with the run's TTL, under key if the system
	// takes the caller's key; the answer is what Lookup takes.
	IssueSession(ctx context.Context, key string, s Session) (handle string, err error)
}

// IssueSession issues s as an access token.
func (t *Tokenstore) IssueSession(ctx context.Context, _ string, s Session) (string, error) {
	res, err := t.node().Issue(ctx, wire.IssueRequest{Kind: token.KindAccess, Subject: s.Subject, ClientID: s.ClientID,
		TTL: TokenTTL.String(), Title: s.Title, IP: s.IP, UserAgent: s.UserAgent})
	if err != nil {
		return "", err
	}
	return res.Token, nil
}

// Preload issues n sessions on t (single-use tokens if t stores no
// sessions) from clients workers and returns their handles: the live
// tokens a scale is measured with.
func Preload(ctx context.Context, t Target, n, clients int, progress io.Writer) ([]string, error) {
	si, ok := t.(SessionIssuer)
	if !ok {
		return Preissue(ctx, t, n, clients, progress)
	}
	var seq atomic.Int64
	return issueWith(ctx, n, clients, progress, func(ctx context.Context, key string) (string, error) {
		return si.IssueSession(ctx, key, SessionOf(seq.Add(1)))
	})
}
