package token

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestSealOpen(t *testing.T) {
	const secret = "tks_rt_the-rotated-token"
	plain := NewHasher(nil)
	sealed, err := plain.Seal(secret, "successor", "access")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secret, "successor", "access"} {
		if bytes.Contains(sealed, []byte(s)) {
			t.Fatalf("sealed bytes contain %q", s)
		}
	}
	got, err := plain.Open(secret, sealed)
	if err != nil || !slices.Equal(got, []string{"successor", "access"}) {
		t.Fatalf("Open = %q, %v; want the two secrets", got, err)
	}
	again, _ := plain.Seal(secret, "successor", "access")
	if bytes.Equal(again, sealed) {
		t.Error("two seals of the same secrets are identical; want a fresh nonce each")
	}
	tampered := slices.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	for name, c := range map[string]struct {
		secret string
		sealed []byte
	}{
		"another secret": {"tks_rt_another-token", sealed},
		"tampered":       {secret, tampered},
		"truncated":      {secret, sealed[:5]},
		"empty":          {secret, nil},
	} {
		if _, err := plain.Open(c.secret, c.sealed); !errors.Is(err, ErrUnseal) {
			t.Errorf("%s: Open error %v, want ErrUnseal", name, err)
		}
	}
}

// A hasher with the cluster key seals under a key derived from it too: a
// copy of the data without the cluster key cannot open (or test guesses
// against) what it sealed, and a hasher without a key opens only its own.
func TestHasherSealUsesClusterKey(t *testing.T) {
	const secret = "a-brought-refresh-token"
	keyed := NewHasher([]byte("cluster-key"))
	sealed, err := keyed.Seal(secret, "successor")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := keyed.Open(secret, sealed); err != nil || !slices.Equal(got, []string{"successor"}) {
		t.Fatalf("keyed Open = %q, %v; want the successor", got, err)
	}
	for name, open := range map[string]func(string, []byte) ([]string, error){
		"without a key":     NewHasher(nil).Open,
		"another cluster's": NewHasher([]byte("other-key")).Open,
	} {
		if _, err := open(secret, sealed); !errors.Is(err, ErrUnseal) {
			t.Errorf("Open %s: error %v, want ErrUnseal", name, err)
		}
	}
	// What a node sealed before it used the key still opens.
	old, _ := NewHasher(nil).Seal(secret, "successor")
	if got, err := keyed.Open(secret, old); err != nil || !slices.Equal(got, []string{"successor"}) {
		t.Fatalf("keyed Open of an unkeyed seal = %q, %v; want the successor", got, err)
	}
}
