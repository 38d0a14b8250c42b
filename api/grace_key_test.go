package api_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/token"
)

// With --hash-key-file, the successor a rotation keeps for its grace is
// sealed under a key derived with the cluster key too: the stored bytes do
// not open with the rotated token's secret alone, and a retry within the
// grace still gets the same successor.
func TestRotationGraceSealedWithClusterKey(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{RotationGrace: time.Minute, HashKey: []byte("cluster-hash-key")})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Token: "brought-refresh-1", Subject: "user:k", ClientID: "app1"})
	req := wire.RotateRequest{Token: rt.Token}
	first := e.rotated(t, req)
	if again := e.rotated(t, req); !reflect.DeepEqual(again, first) {
		t.Fatalf("retry within grace: %+v, want the first answer %+v", again, first)
	}
	tomb, err := e.n.ByID(rt.ID)
	if err != nil {
		t.Fatalf("read the rotated tombstone: %v", err)
	}
	if tomb == nil || tomb.Rotated == nil || len(tomb.Rotated.Sealed) == 0 {
		t.Fatalf("rotated tombstone %+v holds nothing sealed within the grace", tomb)
	}
	if _, err := token.NewHasher(nil).Open(rt.Token, tomb.Rotated.Sealed); !errors.Is(err, token.ErrUnseal) {
		t.Fatalf("the stored successor opens with the rotated token alone (%v); want it to need the cluster key", err)
	}
	if got, err := e.n.Hasher.Open(rt.Token, tomb.Rotated.Sealed); err != nil || len(got) != 1 || got[0] != first.Token {
		t.Fatalf("keyed Open = %q, %v; want the successor", got, err)
	}
}
