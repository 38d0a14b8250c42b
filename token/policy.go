package token

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Kind is the policy of one token kind. A zero TTL means "never expires".
type Kind struct {
	Code           string
	DefaultTTL     time.Duration
	MaxTTL         time.Duration
	SingleUse      bool
	MaxUses        int64 // cap on uses per token; 0 = unlimited
	UpdateLastUsed bool
	// DetectReuse revokes every token of the family when a consumed token
	// of this kind is presented again (RFC 6749 §4.1.2, RFC 9700 §4.14).
	DetectReuse bool
}

// Policy maps kind names to their policy.
type Policy struct {
	Kinds map[string]Kind
}

const (
	day  = 24 * time.Hour
	year = 365 * day
)

// MaxTTL bounds every TTL of a policy and of a request, also of kinds
// without a max: an expiry is leader time plus the TTL in int64
// nanoseconds, which ends in 2262.
const MaxTTL = 100 * year

// The kinds of the built-in policy, as the API names them.
const (
	// KindOAuth1Request is an OAuth 1.0 request token.
	KindOAuth1Request = "oauth1_request"
	// KindOAuth1Callback is an OAuth 1.0 consumer's callback data.
	KindOAuth1Callback = "oauth1_callback"
	// KindOAuth2Code is an OAuth 2.0 authorization code.
	KindOAuth2Code = "oauth2_code"
	// KindOAuth2Refresh is an OAuth 2.0 refresh token.
	KindOAuth2Refresh = "oauth2_refresh"
	// KindAccess is a session or bearer access token.
	KindAccess = "access"
	// KindRemember is a remember-me login.
	KindRemember = "remember"
	// KindDeveloper is a developer's personal API key.
	KindDeveloper = "developer"
)

// DefaultPolicy is the built-in table (DESIGN §1).
func DefaultPolicy() *Policy {
	return &Policy{Kinds: map[string]Kind{
		KindOAuth1Request:  {Code: "r1", DefaultTTL: 10 * time.Minute, MaxTTL: time.Hour, SingleUse: true, MaxUses: 1},
		KindOAuth1Callback: {Code: "c1", DefaultTTL: 10 * time.Minute, MaxTTL: time.Hour},
		KindOAuth2Code:     {Code: "ac", DefaultTTL: 4 * time.Hour, MaxTTL: 4 * time.Hour, SingleUse: true, MaxUses: 1, DetectReuse: true},
		KindOAuth2Refresh:  {Code: "rt", DefaultTTL: year, MaxTTL: year, SingleUse: true, MaxUses: 1, UpdateLastUsed: true, DetectReuse: true},
		KindAccess:         {Code: "at", DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, UpdateLastUsed: true},
		KindRemember:       {Code: "rm", DefaultTTL: 5 * year, MaxTTL: 5 * year, UpdateLastUsed: true},
		KindDeveloper:      {Code: "dv", UpdateLastUsed: true},
	}}
}

// Names returns the kind names in order.
func (p *Policy) Names() []string {
	names := make([]string, 0, len(p.Kinds))
	for n := range p.Kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Errors of TTL and uses resolution; the API maps them to stable codes.
var (
	// ErrUnknownKind means the kind is not in the policy.
	ErrUnknownKind = errors.New("unknown kind")
	// ErrTTLTooLong means the requested TTL exceeds the kind's max TTL.
	ErrTTLTooLong = errors.New("ttl too long")
	// ErrBadUses means max_uses is not allowed for the kind.
	ErrBadUses = errors.New("max_uses not allowed")
)

// Resolve applies the policy of kind to a requested TTL (0 = default) and
// max uses (0 = default). It returns the effective TTL (0 = never) and the
// number of uses (0 = unlimited).
func (p *Policy) Resolve(kind string, ttl time.Duration, maxUses int64) (time.Duration, int64, error) {
	k, ok := p.Kinds[kind]
	if !ok {
		return 0, 0, ErrUnknownKind
	}
	if ttl == 0 {
		ttl = k.DefaultTTL
	}
	if k.MaxTTL > 0 && (ttl == 0 || ttl > k.MaxTTL) {
		return 0, 0, fmt.Errorf("%w: %s allows at most %s", ErrTTLTooLong, kind, k.MaxTTL)
	}
	switch {
	case maxUses < 0:
		return 0, 0, fmt.Errorf("%w: max_uses must not be negative", ErrBadUses)
	case maxUses == 0 && k.SingleUse:
		maxUses = 1
	case maxUses == 0:
		maxUses = k.MaxUses
	case k.SingleUse && maxUses != 1:
		return 0, 0, fmt.Errorf("%w: %s is single-use", ErrBadUses, kind)
	case k.MaxUses > 0 && maxUses > k.MaxUses:
		return 0, 0, fmt.Errorf("%w: %s allows at most %d uses", ErrBadUses, kind, k.MaxUses)
	}
	return ttl, maxUses, nil
}

// policyFile is the YAML shape of --policy. Fields left out keep the
// built-in value of a known kind.
type policyFile struct {
	Kinds map[string]struct {
		Code           *string `yaml:"code"`
		DefaultTTL     *string `yaml:"default_ttl"`
		MaxTTL         *string `yaml:"max_ttl"`
		SingleUse      *bool   `yaml:"single_use"`
		MaxUses        *int64  `yaml:"max_uses"`
		UpdateLastUsed *bool   `yaml:"update_last_used"`
		DetectReuse    *bool   `yaml:"detect_reuse"`
	} `yaml:"kinds"`
}

// LoadPolicy reads a YAML policy file and lays it over the built-in table.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return ParsePolicy(b)
}

// ParsePolicy parses YAML policy text (see LoadPolicy).
func ParsePolicy(b []byte) (*Policy, error) {
	var pf policyFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&pf); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	p := DefaultPolicy()
	for name, o := range pf.Kinds {
		k, known := p.Kinds[name]
		if !known && (o.Code == nil || o.DefaultTTL == nil) {
			return nil, fmt.Errorf("policy: new kind %q needs code and default_ttl", name)
		}
		if !validKindName(name) {
			return nil, fmt.Errorf("policy: kind name %q: want lower-case letters, digits and _", name)
		}
		if o.Code != nil {
			k.Code = *o.Code
		}
		for _, f := range []struct {
			in  *string
			out *time.Duration
			key string
		}{{o.DefaultTTL, &k.DefaultTTL, "default_ttl"}, {o.MaxTTL, &k.MaxTTL, "max_ttl"}} {
			if f.in == nil {
				continue
			}
			d, err := ParseTTL(*f.in)
			if err == nil && d > MaxTTL {
				err = fmt.Errorf("%q is longer than the longest TTL, %dy", *f.in, MaxTTL/year)
			}
			if err != nil {
				return nil, fmt.Errorf("policy: %s.%s: %w", name, f.key, err)
			}
			*f.out = d
		}
		if o.SingleUse != nil {
			k.SingleUse = *o.SingleUse
		}
		if o.MaxUses != nil {
			k.MaxUses = *o.MaxUses
		}
		if o.UpdateLastUsed != nil {
			k.UpdateLastUsed = *o.UpdateLastUsed
		}
		if o.DetectReuse != nil {
			k.DetectReuse = *o.DetectReuse
		}
		p.Kinds[name] = k
	}
	return p, p.validate()
}

func (p *Policy) validate() error {
	seen := map[string]string{}
	for _, name := range p.Names() {
		k := p.Kinds[name]
		if len(k.Code) != 2 || !isBase62(k.Code) || strings.ToLower(k.Code) != k.Code {
			return fmt.Errorf("policy: %s: code %q: want two lower-case letters or digits", name, k.Code)
		}
		if other, dup := seen[k.Code]; dup {
			return fmt.Errorf("policy: %s and %s share code %q", other, name, k.Code)
		}
		seen[k.Code] = name
		if k.DefaultTTL < 0 || k.MaxTTL < 0 || k.MaxUses < 0 {
			return fmt.Errorf("policy: %s: negative ttl or max_uses", name)
		}
		if k.MaxTTL > 0 && (k.DefaultTTL == 0 || k.DefaultTTL > k.MaxTTL) {
			return fmt.Errorf("policy: %s: default_ttl %s exceeds max_ttl %s", name, k.DefaultTTL, k.MaxTTL)
		}
		if k.SingleUse && k.MaxUses > 1 {
			return fmt.Errorf("policy: %s: single_use with max_uses %d", name, k.MaxUses)
		}
		if k.SingleUse {
			k.MaxUses = 1
			p.Kinds[name] = k
		}
	}
	return nil
}

func validKindName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ParseTTL parses a policy duration: a Go duration ("90s", "8760h"), whole
// days or years ("365d", "5y"), or "never" / "0" for no expiry.
func ParseTTL(s string) (time.Duration, error) {
	switch {
	case s == "never" || s == "0":
		return 0, nil
	case strings.HasSuffix(s, "d") || strings.HasSuffix(s, "y"):
		n, err := strconv.ParseInt(s[:len(s)-1], 10, 32)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		unit := day
		if s[len(s)-1] == 'y' {
			unit = year
		}
		if time.Duration(n) > math.MaxInt64/unit {
			return 0, fmt.Errorf("duration %q does not fit in a time.Duration (at most about 292y)", s)
		}
		return time.Duration(n) * unit, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d, nil
}
