package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
)

// Error is an API failure: an HTTP status, a stable code and a message for
// people.
type Error struct {
	Status  int
	Code    string
	Message string
	At      *time.Time
	// RetryAfter, when set, is sent as Retry-After (503s).
	RetryAfter time.Duration
	// Challenge, when set, is sent as WWW-Authenticate (401s).
	Challenge string
	// Token, when set, names the token a 410 is about.
	Token *wire.ErrorToken
	// Op, when set, is the index of the op of a batch that failed.
	Op *int
}

// Error returns the error's code and message.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(e.RetryAfter.Seconds()+0.5)))
	}
	if e.Challenge != "" {
		w.Header().Set("WWW-Authenticate", e.Challenge)
	}
	body := wire.Error{Error: wire.ErrorBody{Code: e.Code, Message: e.Message, At: e.At, Token: e.Token, Op: e.Op}}
	writeJSON(w, e.Status, body)
}

// jsonContentType is the Content-Type of every answer, shared: net/http
// only reads a header's values.
var jsonContentType = []string{"application/json"}

// answerEncoder encodes an answer into a buffer of its own; both are
// reused across requests.
type answerEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var answerEncoders = sync.Pool{New: func() any {
	a := &answerEncoder{}
	a.enc = json.NewEncoder(&a.buf)
	return a
}}

var encodeFailed = []byte(`{"error":{"code":"internal","message":"encoding the response failed"}}` + "\n")

// writeJSON writes v as the JSON answer with status: the bytes of
// json.Marshal and a newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	a := answerEncoders.Get().(*answerEncoder)
	defer func() {
		if a.buf.Cap() <= maxPooledBody {
			a.buf.Reset()
			answerEncoders.Put(a)
		}
	}()
	body := encodeFailed
	if err := a.enc.Encode(v); err == nil {
		body = a.buf.Bytes()
	} else {
		status = http.StatusInternalServerError
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	w.Write(body)
}

// unavailable is the 503 for a node or a nonce store that cannot answer
// right now.
func unavailable(code, msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: code, Message: msg, RetryAfter: time.Second}
}

// nodeError maps what the cluster layer could not do to an API error:
// a node that cannot answer is a 503 with Retry-After, never a 404 or 500.
func nodeError(err error) *Error {
	switch {
	case errors.Is(err, cluster.ErrRefused):
		return errorf(http.StatusBadRequest, wire.CodeWriteRefused, "The leader refused this write: %s", strings.TrimPrefix(err.Error(), cluster.ErrRefused.Error()+" by the leader: "))
	case errors.Is(err, cluster.ErrUnsupported):
		return unavailable(wire.CodeUpgrading, "Not every node of the cluster runs a version that supports this write yet; retry once the upgrade is done.")
	case errors.Is(err, cluster.ErrHalted):
		return unavailable(wire.CodeReplicaHalted, "This node stopped applying the log at an entry it does not know; it needs a newer version. "+err.Error())
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader):
		return unavailable(wire.CodeNoLeader, "The token store has no leader reachable from this node; retry shortly.")
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return unavailable(wire.CodeOutcomeUnknown, "Leadership changed while the write was in flight; it may or may not have been applied.")
	case errors.Is(err, cluster.ErrStale):
		return unavailable(wire.CodeReplicaStale, "This replica has not heard from a leader recently enough to answer; retry shortly, or read at consistency leader.")
	case errors.Is(err, cluster.ErrBehind):
		return unavailable(wire.CodeReplicaBehind, "This replica has not caught up with the requested index; retry shortly.")
	case errors.Is(err, cluster.ErrShutdown), errors.Is(err, cluster.ErrBusy),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return unavailable(wire.CodeUnavailable, "The token store cannot answer right now; retry shortly.")
	}
	return errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
}

// recordError explains a failed token operation. r is the record or
// tombstone the failure concerns, when there is one; a 410 names it.
func recordError(err error, r *fsm.Record) *Error {
	e := recordErrorBody(err, r)
	if e.Status == http.StatusGone {
		e.Token = errorToken(r)
	}
	return e
}

// recordErrorData is recordError for a request that asked for the token's
// data ("with_data"): a 410 carries it while the token has not reached its
// own expiry (by now, the reader's clock), never after.
func recordErrorData(err error, r *fsm.Record, withData bool, now int64) *Error {
	e := recordError(err, r)
	if withData && e.Token != nil && len(r.Data) > 0 && (r.ExpiresAt == 0 || now < r.ExpiresAt) {
		e.Token.Data = r.Data
	}
	return e
}

// errorToken is the token a 410 is about, without its data.
func errorToken(r *fsm.Record) *wire.ErrorToken {
	scopes := r.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return &wire.ErrorToken{ID: r.ID, Kind: r.Kind, Subject: r.Subject, ClientID: r.ClientID, Family: r.Family,
		Scopes: scopes, CreatedAt: wireTime(r.CreatedAt), ExpiresAt: wireTime(r.ExpiresAt),
		InvalidatedAt: wireTime(r.InvalidatedAt), Reason: r.Reason}
}

func recordErrorBody(err error, r *fsm.Record) *Error {
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		return errorf(http.StatusNotFound, wire.CodeTokenNotFound, "No such token.")
	case errors.Is(err, fsm.ErrExists):
		return errorf(http.StatusConflict, wire.CodeTokenExists, "A token with this value already exists.")
	case errors.Is(err, fsm.ErrKindMismatch):
		return errorf(http.StatusForbidden, wire.CodeKindMismatch, "This token is not of the requested kind.")
	case errors.Is(err, fsm.ErrClientMismatch):
		return errorf(http.StatusForbidden, wire.CodeClientMismatch, "This token was not issued to this client.")
	case errors.Is(err, fsm.ErrScope):
		return errorf(http.StatusBadRequest, wire.CodeInvalidScope, "The requested scopes exceed those of the grant.")
	case r == nil:
		return errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
	case errors.Is(err, fsm.ErrExpired):
		at := wireTime(r.ExpiresAt)
		return &Error{Status: http.StatusGone, Code: wire.CodeTokenExpired, At: at,
			Message: fmt.Sprintf("This token expired on %s.", at.Format(time.RFC3339))}
	case errors.Is(err, fsm.ErrRevoked):
		at := wireTime(r.InvalidatedAt)
		msg := fmt.Sprintf("This token became invalid on %s", at.Format(time.RFC3339))
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		return &Error{Status: http.StatusGone, Code: wire.CodeTokenRevoked, At: at, Message: msg + "."}
	case errors.Is(err, fsm.ErrFamilyRevoked):
		at := wireTime(r.InvalidatedAt)
		msg := "This token's grant was revoked"
		if at != nil {
			msg += " on " + at.Format(time.RFC3339)
		}
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		return &Error{Status: http.StatusGone, Code: wire.CodeFamilyRevoked, At: at,
			Message: msg + "; nothing can be issued into it any more."}
	case errors.Is(err, fsm.ErrReused):
		at := wireTime(r.InvalidatedAt)
		return &Error{Status: http.StatusGone, Code: wire.CodeTokenReused, At: at,
			Message: fmt.Sprintf("This token was already used on %s; every token of its grant has been revoked.", at.Format(time.RFC3339))}
	case errors.Is(err, fsm.ErrConsumed):
		at := wireTime(r.InvalidatedAt)
		return &Error{Status: http.StatusGone, Code: wire.CodeTokenConsumed, At: at,
			Message: fmt.Sprintf("This token was used up on %s.", at.Format(time.RFC3339))}
	}
	return errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
}
