package token

import (
	"math/rand/v2"
	"testing"
)

// encodeBase62Bytewise is the plain algorithm: long division by 62, one
// byte at a time, for each digit.
func encodeBase62Bytewise(b []byte, width int) string {
	n := append([]byte(nil), b...)
	out := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		var rem uint
		for j := range n {
			cur := rem<<8 | uint(n[j])
			n[j] = byte(cur / 62)
			rem = cur % 62
		}
		out[i] = base62[rem]
	}
	return string(out)
}

// The encoding of secrets, ids and checksums is their format: the limb-wise
// division must write exactly the digits of the plain one, for every
// length and width, the all-zero and all-ones numbers included.
func TestEncodeBase62MatchesBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 40; n++ {
		for _, width := range []int{1, 5, 6, 22, 43, 60} {
			for trial := range 20 {
				b := make([]byte, n)
				switch trial {
				case 0:
				case 1:
					for i := range b {
						b[i] = 0xff
					}
				default:
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
				}
				if got, want := encodeBase62(b, width), encodeBase62Bytewise(b, width); got != want {
					t.Fatalf("encodeBase62(%x, %d) = %s, want %s", b, width, got, want)
				}
			}
		}
	}
}

func BenchmarkEncodeBase62Secret(b *testing.B) {
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i*37 + 11)
	}
	for b.Loop() {
		encodeBase62(secret, randomChars)
	}
}
