package token

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestSealOpen(t *testing.T) {
	const secret = "tks_rt_the-rotated-token"
	sealed, err := Seal(secret, "successor", "access")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secret, "successor", "access"} {
		if bytes.Contains(sealed, []byte(s)) {
			t.Fatalf("sealed bytes contain %q", s)
		}
	}
	got, err := Open(secret, sealed)
	if err != nil || !slices.Equal(got, []string{"successor", "access"}) {
		t.Fatalf("Open = %q, %v; want the two secrets", got, err)
	}
	again, _ := Seal(secret, "successor", "access")
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
		if _, err := Open(c.secret, c.sealed); !errors.Is(err, ErrUnseal) {
			t.Errorf("%s: Open error %v, want ErrUnseal", name, err)
		}
	}
}
