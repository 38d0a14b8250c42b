package client

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
)

func TestFamilyOpRefused(t *testing.T) {
	ops := []wire.BatchOp{{Op: wire.OpRevokeFamily}, {Op: wire.OpConsume}}
	noFamily := []wire.BatchOp{{Op: wire.OpConsume}}
	upgrading := &Error{Status: http.StatusServiceUnavailable, Code: wire.CodeUpgrading, Op: -1}
	for _, c := range []struct {
		name string
		err  error
		ops  []wire.BatchOp
		want bool
	}{
		{"upgrading", upgrading, ops, true},
		{"upgrading, wrapped", fmt.Errorf("store: %w", upgrading), ops, true},
		{"upgrading, no family op", upgrading, noFamily, false},
		{"old node's invalid op", &Error{Status: http.StatusBadRequest, Code: wire.CodeInvalidField, Op: 0}, ops, true},
		{"invalid field of another op", &Error{Status: http.StatusBadRequest, Code: wire.CodeInvalidField, Op: 1}, ops, false},
		{"invalid field, op out of range", &Error{Status: http.StatusBadRequest, Code: wire.CodeInvalidField, Op: 7}, ops, false},
		{"another failure", &Error{Status: http.StatusGone, Code: wire.CodeTokenReused, Op: 1}, ops, false},
		{"not an API error", errors.New("dial tcp: refused"), ops, false},
	} {
		if got := FamilyOpRefused(c.err, c.ops); got != c.want {
			t.Errorf("%s: FamilyOpRefused = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAsOpNamesTheOp(t *testing.T) {
	orig := &Error{Status: http.StatusGone, Code: wire.CodeTokenReused, Op: 0}
	var ce *Error
	if err := asOp(fmt.Errorf("x: %w", orig), 3); !errors.As(err, &ce) || ce.Op != 3 || ce.Code != wire.CodeTokenReused {
		t.Fatalf("AsOp = %v", err)
	}
	if orig.Op != 0 {
		t.Errorf("AsOp changed the error it was given: Op %d", orig.Op)
	}
	plain := errors.New("plain")
	if asOp(plain, 3) != plain {
		t.Error("AsOp changed an error that is not an *Error")
	}
}
