// Package token defines what a token secret looks like, how it is hashed
// before it reaches the store, and the per-kind policy (TTLs, uses).
//
// A minted secret is "<vendor>_<kind code>_<random><checksum>": the random
// part is 256 bits in fixed-width base62 and the checksum is the CRC32 of
// everything before it, also in base62. The prefix lets secret scanners find
// leaked tokens; the checksum lets the API reject a mistyped string before
// it touches the store.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

const (
	// DefaultVendor is the prefix of every minted secret.
	DefaultVendor = "tks"
	randomBytes   = 32 // 256 bits, above the 192 bits the format requires
	randomChars   = 43 // ceil(256 / log2(62))
	checksumChars = 6  // 62^6 > 2^32
	idChars       = 22 // public ids: 128 bits in base62
	// MaxBroughtLen bounds a caller-supplied token string.
	MaxBroughtLen = 1024
	// MinBroughtLen keeps trivially guessable strings out of the store.
	MinBroughtLen = 8
)

// Sentinel errors of this package.
var (
	// ErrMalformed means the string carries the vendor prefix but is not a
	// valid minted secret (bad shape, unknown kind code or checksum mismatch).
	ErrMalformed = errors.New("token malformed")
	// ErrBadBrought means a caller-supplied token string is empty, too
	// short, too long or contains characters other than printable ASCII.
	ErrBadBrought = errors.New("token string is not acceptable")
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// encodeBase62 writes b as a fixed-width big-endian base62 number. It
// divides the number, held in 32-bit limbs, by 62^5 per pass and writes
// the remainder's five digits: five times fewer passes over the number
// than dividing by 62, with the same digits.
func encodeBase62(b []byte, width int) string {
	const (
		digitsPerPass = 5
		divisor       = 62 * 62 * 62 * 62 * 62 // < 2^32
	)
	// Big-endian 32-bit limbs; leading zero bytes pad b to a whole limb.
	limbs := make([]uint32, (len(b)+3)/4)
	for i, c := range b {
		pos := len(b) - 1 - i // from the least significant byte
		limbs[len(limbs)-1-pos/4] |= uint32(c) << (8 * (pos % 4))
	}
	out := make([]byte, width)
	for i := width - 1; i >= 0; {
		var rem uint64
		for j, l := range limbs {
			cur := rem<<32 | uint64(l)
			limbs[j] = uint32(cur / divisor)
			rem = cur % divisor
		}
		for k := 0; k < digitsPerPass && i >= 0; k++ {
			out[i] = base62[rem%62]
			rem /= 62
			i--
		}
	}
	return string(out)
}

func checksum(s string) string {
	c := crc32.ChecksumIEEE([]byte(s))
	return encodeBase62([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}, checksumChars)
}

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// Format mints and parses secrets for one vendor prefix and a set of kinds.
type Format struct {
	vendor string
	byCode map[string]string // kind code -> kind name
	codes  map[string]string // kind name -> code
}

// NewFormat returns the format for vendor and the kinds of policy p.
func NewFormat(vendor string, p *Policy) (*Format, error) {
	if vendor == "" || !isBase62(vendor) || strings.ContainsAny(vendor, "_") {
		return nil, fmt.Errorf("vendor prefix %q: want letters and digits only", vendor)
	}
	f := &Format{vendor: vendor, byCode: map[string]string{}, codes: map[string]string{}}
	for name, k := range p.Kinds {
		f.byCode[k.Code] = name
		f.codes[name] = k.Code
	}
	return f, nil
}

// Mint returns a new random secret for kind.
func (f *Format) Mint(kind string) (string, error) {
	code, ok := f.codes[kind]
	if !ok {
		return "", fmt.Errorf("mint: unknown kind %q", kind)
	}
	b := make([]byte, randomBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	body := f.vendor + "_" + code + "_" + encodeBase62(b, randomChars)
	return body + checksum(body), nil
}

// Parsed is what Parse learned about a presented token string.
type Parsed struct {
	// Kind is the kind named by a minted secret's code; empty for a
	// caller-supplied (brought) token.
	Kind string
	// Minted is true when the string carries the vendor prefix and passed
	// its checksum.
	Minted bool
}

// Parse checks a presented token string without any store access. A string
// with the vendor prefix must be a well-formed minted secret with a valid
// checksum (else ErrMalformed); any other string is a brought token, to be
// looked up by its hash. (What may be brought is checked at issue time by
// CheckBrought.)
func (f *Format) Parse(s string) (Parsed, error) {
	if strings.HasPrefix(s, f.vendor+"_") {
		rest := s[len(f.vendor)+1:]
		code, tail, ok := strings.Cut(rest, "_")
		if !ok || len(tail) != randomChars+checksumChars || !isBase62(tail) {
			return Parsed{}, ErrMalformed
		}
		kind, ok := f.byCode[code]
		if !ok {
			return Parsed{}, ErrMalformed
		}
		body := s[:len(s)-checksumChars]
		if checksum(body) != s[len(s)-checksumChars:] {
			return Parsed{}, ErrMalformed
		}
		return Parsed{Kind: kind, Minted: true}, nil
	}
	return Parsed{}, nil
}

// CheckBrought validates the shape of a caller-supplied token string.
func CheckBrought(s string) error {
	if len(s) < MinBroughtLen || len(s) > MaxBroughtLen {
		return fmt.Errorf("%w: length %d, want %d to %d", ErrBadBrought, len(s), MinBroughtLen, MaxBroughtLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%w: only printable ASCII without spaces", ErrBadBrought)
		}
	}
	return nil
}

// Vendor returns the vendor prefix.
func (f *Format) Vendor() string { return f.vendor }

// Reserved reports whether s starts with the vendor prefix, which brought
// tokens may not use.
func (f *Format) Reserved(s string) bool { return strings.HasPrefix(s, f.vendor+"_") }

// NewID returns a random public accessor id (never derived from a secret).
func NewID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return encodeBase62(b, idChars), nil
}

// Hasher turns a secret into the digest that is stored, replicated and
// logged (as a prefix) in its place. With a key it is HMAC-SHA-256, so a
// stolen data directory cannot be checked against guessed secrets; the key
// must be identical on every node.
type Hasher struct {
	key []byte
}

// NewHasher returns a SHA-256 hasher, or HMAC-SHA-256 when key is non-empty.
func NewHasher(key []byte) Hasher { return Hasher{key: key} }

// Sum returns the 32-byte digest of secret as a string (raw bytes).
func (h Hasher) Sum(secret string) string {
	if len(h.key) == 0 {
		s := sha256.Sum256([]byte(secret))
		return string(s[:])
	}
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(secret))
	return string(m.Sum(nil))
}

// LogPrefix is the short hex prefix of a digest that logs may carry.
func LogPrefix(digest string) string {
	if len(digest) > 6 {
		digest = digest[:6]
	}
	return hex.EncodeToString([]byte(digest))
}
