package token_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/big"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/token"
)

const (
	alphabet      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randomChars   = 43
	checksumChars = 6
	// mintedLen is the length of a minted secret of the default vendor:
	// "tks_" + two-char code + "_" + random + checksum.
	mintedLen = len("tks_") + 2 + 1 + randomChars + checksumChars
)

// defaultFormat returns the format of the default vendor and policy.
func defaultFormat(t testing.TB) *token.Format {
	t.Helper()
	f, err := token.NewFormat(token.DefaultVendor, token.DefaultPolicy())
	if err != nil {
		t.Fatalf("NewFormat(%q, DefaultPolicy()): unexpected error %v", token.DefaultVendor, err)
	}
	return f
}

// mint mints a secret of kind or fails the test.
func mint(t testing.TB, f *token.Format, kind string) string {
	t.Helper()
	s, err := f.Mint(kind)
	if err != nil {
		t.Fatalf("Mint(%q): unexpected error %v", kind, err)
	}
	return s
}

// refBase62 is an independent fixed-width base62 encoder (math/big), used
// to check the package's own long-division encoder.
func refBase62(b []byte, width int) string {
	n := new(big.Int).SetBytes(b)
	base := big.NewInt(62)
	out := make([]byte, width)
	rem := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, rem)
		out[i] = alphabet[rem.Int64()]
	}
	return string(out)
}

// refChecksum is the checksum a minted secret must end with: the CRC32
// (IEEE) of everything before it, as 6 base62 chars.
func refChecksum(body string) string {
	c := crc32.ChecksumIEEE([]byte(body))
	return refBase62([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}, checksumChars)
}

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(alphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// otherChar returns s with the byte at i replaced by another base62 char.
func otherChar(s string, i int) string {
	if s[i] == 'A' {
		return replaceAt(s, i, 'B')
	}
	return replaceAt(s, i, 'A')
}

// replaceAt returns s with the byte at i replaced by c.
func replaceAt(s string, i int, c byte) string {
	b := []byte(s)
	b[i] = c
	return string(b)
}

func TestMintShapeEveryKind(t *testing.T) {
	p := token.DefaultPolicy()
	f := defaultFormat(t)
	if len(p.Names()) != 7 {
		t.Fatalf("DefaultPolicy has %d kinds %v, want the 7 of DESIGN §1", len(p.Names()), p.Names())
	}
	for _, kind := range p.Names() {
		t.Run(kind, func(t *testing.T) {
			code := p.Kinds[kind].Code
			prefix := "tks_" + code + "_"
			s := mint(t, f, kind)
			if !strings.HasPrefix(s, prefix) {
				t.Fatalf("Mint(%q) = %q, want prefix %q", kind, s, prefix)
			}
			if len(s) != mintedLen {
				t.Fatalf("Mint(%q) = %q has length %d, want %d", kind, s, len(s), mintedLen)
			}
			tail := s[len(prefix):]
			if !isBase62(tail) {
				t.Fatalf("Mint(%q) = %q: random part and checksum %q are not all base62", kind, s, tail)
			}
			body, sum := s[:len(s)-checksumChars], s[len(s)-checksumChars:]
			if want := refChecksum(body); sum != want {
				t.Fatalf("Mint(%q) = %q: checksum %q, want CRC32 in base62 %q", kind, s, sum, want)
			}
			got, err := f.Parse(s)
			if err != nil {
				t.Fatalf("Parse(Mint(%q) = %q): unexpected error %v", kind, s, err)
			}
			if want := (token.Parsed{Kind: kind, Minted: true}); got != want {
				t.Fatalf("Parse(%q) = %+v, want %+v", s, got, want)
			}
			if !f.Reserved(s) {
				t.Fatalf("Reserved(%q) = false, want true for a minted secret", s)
			}
			if s2 := mint(t, f, kind); s2 == s {
				t.Fatalf("two mints of %q gave the same secret %q", kind, s)
			}
		})
	}
}

func TestMintManyDistinct(t *testing.T) {
	f := defaultFormat(t)
	maxRandom := refBase62([]byte(strings.Repeat("\xff", 32)), randomChars)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		s := mint(t, f, "access")
		if seen[s] {
			t.Fatalf("mint %d repeated an earlier secret %q", i, s)
		}
		seen[s] = true
		// The random part is a 256-bit number: in fixed-width base62 (whose
		// alphabet is in ASCII order) it never exceeds the encoding of
		// 2^256-1.
		if r := s[len("tks_at_") : len(s)-checksumChars]; r > maxRandom {
			t.Fatalf("secret %q: random part %q exceeds the largest 256-bit value %q", s, r, maxRandom)
		}
	}
}

func TestMintUnknownKind(t *testing.T) {
	f := defaultFormat(t)
	if s, err := f.Mint("nonce"); err == nil {
		t.Fatalf("Mint(%q) = %q, nil; want an error for a kind not in the policy", "nonce", s)
	}
}

func TestBase62MatchesReference(t *testing.T) {
	// NewID is 16 random bytes in 22 base62 chars; Mint's checksum uses the
	// same encoder. Check the encoder on the checksum of fixed bodies,
	// including ones whose CRC has leading zero bytes.
	f := defaultFormat(t)
	for i := 0; i < 200; i++ {
		s := mint(t, f, "oauth2_code")
		body := s[:len(s)-checksumChars]
		if got, want := s[len(body):], refChecksum(body); got != want {
			t.Fatalf("checksum of %q = %q, want %q", body, got, want)
		}
	}
	for i := 0; i < 100; i++ {
		id, err := token.NewID()
		if err != nil {
			t.Fatalf("NewID: unexpected error %v", err)
		}
		if len(id) != 22 || !isBase62(id) {
			t.Fatalf("NewID() = %q, want 22 base62 chars", id)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	f := defaultFormat(t)
	good := mint(t, f, "access") // tks_at_...
	body := good[:len(good)-checksumChars]
	random := good[len("tks_at_") : len(good)-checksumChars]

	// A secret with a correct checksum but a code no kind has: it must be
	// refused for the code, not for the checksum.
	unknownBody := "tks_zz_" + random
	unknownCode := unknownBody + refChecksum(unknownBody)

	tests := []struct {
		name string
		in   string
	}{
		{"prefix only", "tks_"},
		{"prefix and code", "tks_at_"},
		{"one char short", good[:len(good)-1]},
		{"one char long", good + "0"},
		{"random part twice", body + body[len("tks_at_"):] + good[len(body):]},
		{"missing second underscore", strings.Replace(good, "tks_at_", "tks_at", 1)},
		{"second underscore moved", "tks_" + "at" + good[len("tks_at_"):len("tks_at_")+1] + "_" + good[len("tks_at_")+1:]},
		{"extra underscore", "tks_at__" + good[len("tks_at_")+1:]},
		{"non-base62 dash", replaceAt(good, 20, '-')},
		{"non-base62 underscore", replaceAt(good, 20, '_')},
		{"non-base62 plus", replaceAt(good, len(good)-1, '+')},
		{"non-ASCII", good[:len(good)-2] + "é"},
		{"space", replaceAt(good, 30, ' ')},
		{"unknown kind code", unknownCode},
		{"three-char code, tail one short", "tks_acc_" + random[1:] + refChecksum("tks_acc_"+random[1:])},
		{"empty code", "tks__" + random + refChecksum("tks__"+random)},
		{"upper-case code", "tks_AT_" + random + refChecksum("tks_AT_"+random)},
		{"checksum of another body", body + refChecksum(body+"x")},
		{"checksum zeroed", body + "000000"},
		{"swapped random and checksum", "tks_at_" + good[len(body):] + random},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.Parse(tt.in)
			if !errors.Is(err, token.ErrMalformed) {
				t.Fatalf("Parse(%q) = %+v, %v; want ErrMalformed", tt.in, got, err)
			}
			if got != (token.Parsed{}) {
				t.Fatalf("Parse(%q) returned %+v with its error, want the zero Parsed", tt.in, got)
			}
		})
	}
}

// TestParseSingleCharChange changes every character of the random part and
// of the checksum to every other base62 character: CRC32 detects every
// single-symbol change, so each must fail.
func TestParseSingleCharChange(t *testing.T) {
	f := defaultFormat(t)
	for _, kind := range []string{"access", "oauth2_refresh", "developer"} {
		good := mint(t, f, kind)
		start := len(good) - randomChars - checksumChars
		for i := start; i < len(good); i++ {
			for j := 0; j < len(alphabet); j++ {
				c := alphabet[j]
				if c == good[i] {
					continue
				}
				bad := replaceAt(good, i, c)
				if got, err := f.Parse(bad); !errors.Is(err, token.ErrMalformed) {
					t.Fatalf("Parse(%q) (position %d of %q changed to %q) = %+v, %v; want ErrMalformed",
						bad, i, good, c, got, err)
				}
			}
		}
	}
}

func TestParseChangedCodeOrVendor(t *testing.T) {
	f := defaultFormat(t)
	good := mint(t, f, "access")
	tests := []struct {
		name string
		in   string
		want token.Parsed
		err  error
	}{
		// Another valid code: the checksum covers the code, so it fails.
		{"code of another kind", strings.Replace(good, "tks_at_", "tks_ac_", 1), token.Parsed{}, token.ErrMalformed},
		// Without the vendor prefix the string is a brought token.
		{"first underscore missing", strings.Replace(good, "tks_", "tks", 1), token.Parsed{}, nil},
		{"vendor upper-case", strings.Replace(good, "tks_", "TKS_", 1), token.Parsed{}, nil},
		{"vendor changed", strings.Replace(good, "tks_", "tkz_", 1), token.Parsed{}, nil},
		{"leading space", " " + good, token.Parsed{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.Parse(tt.in)
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseBroughtTokens(t *testing.T) {
	f := defaultFormat(t)
	for _, s := range []string{
		"my-own-token-1234",
		"tks",
		"tks-at-" + strings.Repeat("a", 49),
		"TKS_at_whatever",
		"x",
		"",
	} {
		got, err := f.Parse(s)
		if err != nil || got != (token.Parsed{}) {
			t.Errorf("Parse(%q) = %+v, %v; want a brought token (zero Parsed, nil)", s, got, err)
		}
		if f.Reserved(s) {
			t.Errorf("Reserved(%q) = true, want false", s)
		}
	}
}

func TestCustomVendor(t *testing.T) {
	p := token.DefaultPolicy()
	acme, err := token.NewFormat("acme", p)
	if err != nil {
		t.Fatalf("NewFormat(%q): unexpected error %v", "acme", err)
	}
	if acme.Vendor() != "acme" {
		t.Fatalf("Vendor() = %q, want %q", acme.Vendor(), "acme")
	}
	def := defaultFormat(t)

	for _, kind := range p.Names() {
		s := mint(t, acme, kind)
		prefix := "acme_" + p.Kinds[kind].Code + "_"
		if !strings.HasPrefix(s, prefix) || len(s) != len(prefix)+randomChars+checksumChars {
			t.Fatalf("acme Mint(%q) = %q, want %q + %d chars", kind, s, prefix, randomChars+checksumChars)
		}
		if got, err := acme.Parse(s); err != nil || got != (token.Parsed{Kind: kind, Minted: true}) {
			t.Fatalf("acme Parse(%q) = %+v, %v; want kind %q minted", s, got, err, kind)
		}
		if !acme.Reserved(s) {
			t.Fatalf("acme Reserved(%q) = false, want true", s)
		}
		// To the default format it is just a string: a brought token.
		if got, err := def.Parse(s); err != nil || got != (token.Parsed{}) {
			t.Fatalf("tks Parse(%q) = %+v, %v; want a brought token", s, got, err)
		}
	}

	tks := mint(t, def, "access")
	if got, err := acme.Parse(tks); err != nil || got != (token.Parsed{}) {
		t.Fatalf("acme Parse(%q) = %+v, %v; want a brought token (zero Parsed, nil)", tks, got, err)
	}
	if acme.Reserved(tks) {
		t.Fatalf("acme Reserved(%q) = true, want false: the tks_ prefix is not reserved for vendor acme", tks)
	}
	if err := token.CheckBrought(tks); err != nil {
		t.Fatalf("CheckBrought(%q) = %v, want nil: under vendor acme a tks_ secret may be brought", tks, err)
	}
	// A corrupted acme secret is malformed for acme.
	bad := replaceAt(mint(t, acme, "access"), 20, '-')
	if _, err := acme.Parse(bad); !errors.Is(err, token.ErrMalformed) {
		t.Fatalf("acme Parse(%q) error = %v, want ErrMalformed", bad, err)
	}
}

func TestNewFormatRejectsBadVendor(t *testing.T) {
	for _, v := range []string{"", "t_s", "tks_", "t-s", "tks!", "t s", "tké"} {
		if f, err := token.NewFormat(v, token.DefaultPolicy()); err == nil {
			t.Errorf("NewFormat(%q) = %v, nil; want an error", v, f)
		}
	}
}

func TestCheckBrought(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"min length", strings.Repeat("a", token.MinBroughtLen), true},
		{"max length", strings.Repeat("b", token.MaxBroughtLen), true},
		{"all printable ASCII", "!\"#$%&'()*+,-./0123456789:;<=>?@ABCXYZ[\\]^_`abcxyz{|}~", true},
		{"typical", "4f1a2b3c-aaaa-bbbb-cccc-0123456789ab", true},
		{"vendor-looking", "tks_at_whatever", true}, // Reserved is a separate check
		{"empty", "", false},
		{"one short", strings.Repeat("a", token.MinBroughtLen-1), false},
		{"one long", strings.Repeat("a", token.MaxBroughtLen+1), false},
		{"space", "abcd efgh", false},
		{"leading space", " abcdefgh", false},
		{"tab", "abcd\tefgh", false},
		{"newline", "abcdefgh\n", false},
		{"NUL", "abcd\x00efgh", false},
		{"DEL", "abcd\x7fefgh", false},
		{"escape", "\x1b[31mabcdefgh", false},
		{"non-ASCII", "abcdéfgh", false},
		{"invalid UTF-8", "abcd\xffefgh", false},
		{"long non-ASCII", strings.Repeat("é", 10), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := token.CheckBrought(tt.in)
			if tt.ok && err != nil {
				t.Fatalf("CheckBrought(%q) = %v, want nil", tt.in, err)
			}
			if !tt.ok && !errors.Is(err, token.ErrBadBrought) {
				t.Fatalf("CheckBrought(%q) = %v, want ErrBadBrought", tt.in, err)
			}
		})
	}
}

func TestReserved(t *testing.T) {
	f := defaultFormat(t)
	tests := []struct {
		in   string
		want bool
	}{
		{"tks_", true},
		{"tks_anything", true},
		{"tks_at_" + strings.Repeat("0", 49), true},
		{mint(t, f, "remember"), true},
		{"tks", false},
		{"tksat_x", false},
		{"TKS_x", false},
		{"xtks_", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := f.Reserved(tt.in); got != tt.want {
			t.Errorf("Reserved(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestHasherSHA256(t *testing.T) {
	h := token.NewHasher(nil)
	for _, secret := range []string{"", "a", "tks_at_0123", strings.Repeat("z", 1024)} {
		want := sha256.Sum256([]byte(secret))
		got := h.Sum(secret)
		if got != string(want[:]) {
			t.Errorf("NewHasher(nil).Sum(%q) = %x, want sha256 %x", secret, got, want)
		}
		if len(got) != sha256.Size {
			t.Errorf("digest of %q has %d bytes, want %d", secret, len(got), sha256.Size)
		}
	}
	if a, b := token.NewHasher(nil).Sum("x"), token.NewHasher([]byte{}).Sum("x"); a != b {
		t.Errorf("empty key digest %x differs from nil key digest %x; want both plain SHA-256", b, a)
	}
}

func TestHasherHMAC(t *testing.T) {
	key := []byte("cluster-key-0123456789")
	secret := "tks_at_secret"
	plain := token.NewHasher(nil).Sum(secret)
	keyed := token.NewHasher(key).Sum(secret)

	m := hmac.New(sha256.New, key)
	m.Write([]byte(secret))
	if want := string(m.Sum(nil)); keyed != want {
		t.Fatalf("HMAC Sum(%q) = %x, want crypto/hmac %x", secret, keyed, want)
	}
	if keyed == plain {
		t.Fatalf("HMAC digest equals plain SHA-256 digest %x; want them to differ", plain)
	}
	// The same key in another Hasher value (another node or process) gives
	// the same digest: never a process-local hash.
	again := token.NewHasher(append([]byte(nil), key...)).Sum(secret)
	if again != keyed {
		t.Fatalf("second Hasher with the same key: %x, want %x", again, keyed)
	}
	if other := token.NewHasher([]byte("another-key")).Sum(secret); other == keyed {
		t.Fatalf("different keys gave the same digest %x", other)
	}
}

func TestLogPrefix(t *testing.T) {
	d := token.NewHasher(nil).Sum("tks_at_secret")
	p := token.LogPrefix(d)
	if len(p) != 12 {
		t.Fatalf("LogPrefix = %q (%d chars), want 12 hex chars", p, len(p))
	}
	if want := hex.EncodeToString([]byte(d[:6])); p != want {
		t.Fatalf("LogPrefix = %q, want %q (hex of the first 6 digest bytes)", p, want)
	}
	if _, err := hex.DecodeString(p); err != nil || strings.ToLower(p) != p {
		t.Fatalf("LogPrefix = %q is not lower-case hex: %v", p, err)
	}
	if got := token.LogPrefix("\x01\x02"); got != "0102" {
		t.Fatalf("LogPrefix of a 2-byte digest = %q, want %q", got, "0102")
	}
	if got := token.LogPrefix(""); got != "" {
		t.Fatalf("LogPrefix(\"\") = %q, want \"\"", got)
	}
}

// FuzzParse checks that Parse never panics and that its answers are
// consistent with Reserved and CheckBrought.
//
// Parse deliberately does not check the shape of a brought token (DESIGN
// §2: any string without the vendor prefix is looked up, and an unknown one
// answers 404); CheckBrought runs only at issue time. So the brought-token
// property checked here is the one the store relies on: every string that
// may be brought (passes CheckBrought, not reserved) is accepted by Parse as
// brought, so a brought token can always be looked up again, and whatever
// Parse accepts as brought is never reserved.
func FuzzParse(f *testing.F) {
	format := defaultFormat(f)
	minted := mint(f, format, "oauth2_code")
	f.Add(minted)
	f.Add(otherChar(minted, len(minted)-3))
	f.Add(otherChar(minted, 12))
	f.Add(replaceAt(minted, 10, '-'))
	f.Add("my-brought-token-123")
	f.Add("")
	f.Add("tks_")
	f.Add("tks_at_")
	f.Add("tks_at_" + strings.Repeat("0", randomChars+checksumChars))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := format.Parse(s)
		reserved := format.Reserved(s)
		switch {
		case err != nil:
			if !errors.Is(err, token.ErrMalformed) {
				t.Fatalf("Parse(%q) error %v, want ErrMalformed or nil", s, err)
			}
			if !reserved {
				t.Fatalf("Parse(%q) = ErrMalformed for a string without the vendor prefix; want it treated as brought", s)
			}
			if p != (token.Parsed{}) {
				t.Fatalf("Parse(%q) = %+v with an error, want zero Parsed", s, p)
			}
		case p.Minted:
			if !strings.HasPrefix(s, "tks_") || len(s) != mintedLen || !reserved {
				t.Fatalf("Parse(%q) = Minted, but it has length %d (want %d), reserved %v", s, len(s), mintedLen, reserved)
			}
			if _, ok := token.DefaultPolicy().Kinds[p.Kind]; !ok {
				t.Fatalf("Parse(%q) = Minted with kind %q, not a kind of the policy", s, p.Kind)
			}
			if want := refChecksum(s[:len(s)-checksumChars]); s[len(s)-checksumChars:] != want {
				t.Fatalf("Parse(%q) = Minted, but the checksum should be %q", s, want)
			}
			if p2, err2 := format.Parse(s); p2 != p || err2 != nil {
				t.Fatalf("Parse(%q) twice: %+v, nil then %+v, %v", s, p, p2, err2)
			}
		default: // brought
			if p.Kind != "" {
				t.Fatalf("Parse(%q) = %+v: a brought token has no kind", s, p)
			}
			if reserved {
				t.Fatalf("Parse(%q) accepted a vendor-prefixed string as brought", s)
			}
			if err := token.CheckBrought(s); err != nil && !errors.Is(err, token.ErrBadBrought) {
				t.Fatalf("CheckBrought(%q) = %v, want nil or ErrBadBrought", s, err)
			}
		}
		if token.CheckBrought(s) == nil && !reserved && (err != nil || p != (token.Parsed{})) {
			t.Fatalf("%q may be brought (CheckBrought ok, not reserved) but Parse = %+v, %v; want a brought token", s, p, err)
		}
	})
}
