package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// Type is the first byte of every encoded command.
type Type uint8

// IgnoreUnknown marks a command type that a node which does not know it may
// skip instead of stopping (safe rolling upgrades). It is or-ed into the
// type byte of commands added after a release whose absence cannot make
// replicas diverge.
const IgnoreUnknown Type = 0x80

// The registry of command types. Numbers are part of the log format: never
// reuse or renumber one.
const (
	TypeBatch         Type = 1
	TypeIssue         Type = 2
	TypeConsume       Type = 3
	TypeRevoke        Type = 4
	TypeRevokeSubject Type = 5
	TypeRevokeFamily  Type = 6
	TypeExpire        Type = 7
	TypeTouch         Type = 8
	TypeRotate        Type = 9
	TypeFence         Type = 10
	// TypeClientBatch is a client's atomic batch (ClientBatch), not the
	// coalescing Batch.
	TypeClientBatch      Type = 11
	TypeRevokeFamilyKind Type = 12
)

// Command is anything that can be written to the log.
type Command interface {
	Type() Type
}

// registry lists every command: the type byte selects the constructor of
// the value its body decodes into.
var registry = map[Type]func() applier{
	TypeBatch:         func() applier { return new(Batch) },
	TypeIssue:         func() applier { return new(Issue) },
	TypeConsume:       func() applier { return new(Consume) },
	TypeRevoke:        func() applier { return new(Revoke) },
	TypeRevokeSubject: func() applier { return new(RevokeSubject) },
	TypeRevokeFamily:  func() applier { return new(RevokeFamily) },
	TypeExpire:        func() applier { return new(Expire) },
	TypeTouch:         func() applier { return new(Touch) },
	TypeRotate:        func() applier { return new(Rotate) },
	TypeFence:         func() applier { return new(Fence) },

	TypeClientBatch:      func() applier { return new(ClientBatch) },
	TypeRevokeFamilyKind: func() applier { return new(RevokeFamilyKind) },
}

// applier is a command that knows how to change the state.
type applier interface {
	Command
	apply(tx *applyTx) Result
}

// Batch is one log entry carrying many commands, so many API requests share
// one Raft round trip and one fsync. Now is the leader's clock when the
// batch was formed; every command in it is applied at that time.
//
// Reqs, when set, holds a request id per entry ("" for none). A command
// with a request id applies at most once: while the id is remembered
// (RequestWindow of log time), the same id again answers the first
// result instead of applying. A write whose outcome was unknown (the
// leader changed mid-apply) is retried under its id safely.
type Batch struct {
	Now     int64    `codec:"n"`
	Entries [][]byte `codec:"e"` // each an encoded command
	Reqs    []string `codec:"q,omitempty"`
}

// Issue creates a token. It fails with ErrExists if the hash or id is taken.
type Issue struct {
	Record Record `codec:"r"` // ID, Hash and the caller's fields
	TTL    int64  `codec:"ttl,omitempty"`
}

// Consume uses a token once; the last use turns it into a tombstone.
// Kind and ClientID, when set, must match or nothing changes.
type Consume struct {
	Hash     string `codec:"h"`
	Kind     string `codec:"k,omitempty"`
	ClientID string `codec:"c,omitempty"`
	// FamilyHold, when positive, is how long (log time) a family revoked
	// by this command's reuse detection is remembered as revoked.
	FamilyHold int64 `codec:"fh,omitempty"`
}

// Revoke invalidates one token, found by Hash or by ID.
type Revoke struct {
	Hash   string `codec:"h,omitempty"`
	ID     string `codec:"i,omitempty"`
	Reason string `codec:"r,omitempty"`
}

// RevokeSubject invalidates every active token of a subject, optionally of
// one kind only.
type RevokeSubject struct {
	Subject string `codec:"s"`
	Kind    string `codec:"k,omitempty"`
	Reason  string `codec:"r,omitempty"`
}

// RevokeFamily invalidates every active token of a grant family.
type RevokeFamily struct {
	Family string `codec:"f"`
	Reason string `codec:"r,omitempty"`
	// FamilyHold, when positive, is how long (log time) the family is
	// remembered as revoked, so that nothing is issued into it after.
	FamilyHold int64 `codec:"fh,omitempty"`
}

// RevokeFamilyKind invalidates the active tokens of one kind in a grant
// family, and leaves the family open: tokens can still be issued and
// rotated into it (a server replacing a grant's access tokens).
type RevokeFamilyKind struct {
	Family string `codec:"f"`
	Kind   string `codec:"k"`
	Reason string `codec:"r,omitempty"`
}

// Type implements Command.
func (*RevokeFamilyKind) Type() Type { return TypeRevokeFamilyKind }

// Expire deletes the listed records whose GC time is at or before Before.
// The leader proposes it from its view of the expiry index; every replica
// re-checks the condition, so a record that changed meanwhile is kept.
type Expire struct {
	Before int64    `codec:"b"`
	IDs    []string `codec:"i"`
}

// Touch records when tokens were last used by reads (lookups,
// introspection). Nodes buffer their reads and propose them in bulk, at
// most once per token per granularity: never a log entry per read.
type Touch struct {
	Uses []Use `codec:"u"`
}

// Use is one token's latest read on a node.
type Use struct {
	Hash      string `codec:"h"`
	At        int64  `codec:"a"` // the reader's clock; capped at log time
	IP        string `codec:"ip,omitempty"`
	UserAgent string `codec:"ua,omitempty"`
}

// Rotate replaces a refresh token by its successor in the same family,
// and optionally issues an access token with it, in one entry: all of it
// happens or none of it. Presenting a consumed token again revokes its
// family, except within the grace period of its rotation, where the
// successor it already got is answered again (with Sealed, the secrets).
type Rotate struct {
	Hash     string `codec:"h"`           // the refresh token presented
	Kind     string `codec:"k"`           // the kind that rotates
	ClientID string `codec:"c,omitempty"` // when set, must match
	// Next is the successor: ID, Hash, and optionally IP, UserAgent and
	// Generator. Everything else is the rotated token's.
	Next Record `codec:"n"`
	TTL  int64  `codec:"t,omitempty"`
	// Access, when set, is issued in the family: Record has ID, Hash,
	// Kind, MaxUses, DetectReuse, Generator and Scopes (nil: the grant's,
	// else a subset). Subject, client, family and rlc are the grant's.
	Access *Issue `codec:"a,omitempty"`
	// Grace, when positive, keeps Sealed with the rotated token's
	// tombstone for that long (log time).
	Grace  int64  `codec:"g,omitempty"`
	Sealed []byte `codec:"x,omitempty"`
	// FamilyHold is as Consume's, for a reuse this rotation detects.
	FamilyHold int64 `codec:"fh,omitempty"`
}

// Fence marks the log: from this entry on, it holds commands that need
// state machines of at least Version. The leader writes it once every
// voter runs that version; a node of an older release meets a type it
// does not know and halts there, and one that knows the type but not the
// version halts too: never a replica that applies newer fields as if they
// were not there.
type Fence struct {
	Version int `codec:"v"`
}

// Type implements Command.
func (*Fence) Type() Type { return TypeFence }

// Type implements Command.
func (*Rotate) Type() Type { return TypeRotate }

// Type implements Command.
func (*Touch) Type() Type { return TypeTouch }

// Type implements Command.
func (*Batch) Type() Type { return TypeBatch }

// Type implements Command.
func (*Issue) Type() Type { return TypeIssue }

// Type implements Command.
func (*Consume) Type() Type { return TypeConsume }

// Type implements Command.
func (*Revoke) Type() Type { return TypeRevoke }

// Type implements Command.
func (*RevokeSubject) Type() Type { return TypeRevokeSubject }

// Type implements Command.
func (*RevokeFamily) Type() Type { return TypeRevokeFamily }

// Type implements Command.
func (*Expire) Type() Type { return TypeExpire }

var msgpackHandle = &codec.MsgpackHandle{WriteExt: true}

// Encoders and decoders are reused: making one costs more than encoding
// a command with it. A decoder's result never shares memory with its
// input (strings and byte slices are copied out), so a pooled decoder
// keeps nothing of what it read.
var (
	encoders = sync.Pool{New: func() any {
		e := &encoder{buf: make([]byte, 0, 1024)}
		e.enc = codec.NewEncoderBytes(&e.buf, msgpackHandle)
		return e
	}}
	decoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(noBytes, msgpackHandle) }}
	noBytes  = []byte{}
)

// maxPooledBuf bounds the scratch buffer an encoder keeps between uses.
const maxPooledBuf = 64 << 10

type encoder struct {
	enc *codec.Encoder
	buf []byte
}

// Encode returns the type byte followed by the msgpack body of c.
func Encode(c Command) ([]byte, error) {
	return Reencode(c, nil)
}

// Reencode returns c encoded as Encode does; when that is entry byte for
// byte (c was decoded from entry), entry itself, with no copy.
func Reencode(c Command, entry []byte) ([]byte, error) {
	if b, ok := c.(*Batch); ok && b != nil && fastBatch {
		return appendBatch(make([]byte, 0, batchSize(b)), b), nil
	}
	if b, ok := c.(*ClientBatch); ok && b != nil && fastClientBatch {
		out := appendClientBatch(make([]byte, 0, clientBatchSize(b)), b)
		if bytes.Equal(out, entry) {
			return entry, nil
		}
		return out, nil
	}
	var scratch [512]byte
	if out, ok := fastEncode(scratch[:0], c); ok {
		if bytes.Equal(out, entry) {
			return entry, nil
		}
		return bytes.Clone(out), nil
	}
	e := encoders.Get().(*encoder)
	e.enc.ResetBytes(&e.buf)
	err := e.enc.Encode(c)
	var out []byte
	switch {
	case err != nil:
	case len(entry) == 1+len(e.buf) && entry[0] == byte(c.Type()) && bytes.Equal(entry[1:], e.buf):
		out = entry
	default:
		out = make([]byte, 1+len(e.buf))
		out[0] = byte(c.Type())
		copy(out[1:], e.buf)
	}
	if cap(e.buf) <= maxPooledBuf {
		e.buf = e.buf[:0]
		encoders.Put(e)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", c, err)
	}
	return out, nil
}

// decodeBody decodes the msgpack body b into v with a pooled decoder.
func decodeBody(b []byte, v any) error {
	if b == nil {
		b = noBytes // a decoder reset to nil would read its last input
	}
	d := decoders.Get().(*codec.Decoder)
	d.ResetBytes(b)
	err := d.Decode(v)
	d.ResetBytes(noBytes) // keeps nothing of b
	decoders.Put(d)
	return err
}

// Decode reads an entry written by Encode into a new command value. A
// Batch's entries may be slices of b; b must not change while they are
// used.
func Decode(b []byte) (Command, error) {
	c, err := decodeEntry(b)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ErrUnknownType is why Decode fails on a command type this build does not
// know: a newer node's command, or a corrupt entry.
var ErrUnknownType = errors.New("unknown command type")

// Why decodeEntry could not return a command.
var (
	// errUnknownSkippable: an unknown type flagged IgnoreUnknown.
	errUnknownSkippable = fmt.Errorf("%w marked ignorable", ErrUnknownType)
	// errUnknownType: an unknown type not flagged ignorable. Applying
	// anything past it could diverge from the nodes that know it.
	errUnknownType = ErrUnknownType
	// errUndecodable: a known type whose body does not decode, or an
	// empty entry. Every node of this build fails it the same way.
	errUndecodable = errors.New("undecodable entry")
)

func decodeEntry(b []byte) (applier, error) { return decodeEntryIn(b, nil) }

// decodeEntryIn is decodeEntry taking the commands the fast codec decodes
// from slab when it has room (nil: each of its own).
func decodeEntryIn(b []byte, slab *cmdSlab) (applier, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", errUndecodable)
	}
	t := Type(b[0])
	newCmd, ok := registry[t]
	if !ok {
		if t&IgnoreUnknown != 0 {
			return nil, errUnknownSkippable
		}
		return nil, fmt.Errorf("%w %d", errUnknownType, b[0])
	}
	if t == TypeBatch && fastBatch {
		if c, ok := decodeBatch(b[1:]); ok {
			return c, nil
		}
	}
	if t == TypeClientBatch && fastClientBatch {
		if c, ok := decodeClientBatch(b[1:]); ok {
			return c, nil
		}
	}
	if c, ok := fastDecodeIn(t, b[1:], slab); ok {
		return c, nil
	}
	c := newCmd()
	if err := decodeBody(b[1:], c); err != nil {
		return nil, fmt.Errorf("%w: %T: %v", errUndecodable, c, err)
	}
	return c, nil
}

// KnownTypes returns the command types this build can apply, in order. A
// node reports them, so that the leader proposes a new type only once
// every voter knows it.
func KnownTypes() []Type {
	var ts []Type
	for t := range 256 {
		if _, ok := registry[Type(t)]; ok {
			ts = append(ts, Type(t))
		}
	}
	return ts
}

// BaseTypes returns the command types of the first release. Every node
// knows them, including a node too old to report what it knows.
func BaseTypes() []Type {
	return []Type{TypeBatch, TypeIssue, TypeConsume, TypeRevoke, TypeRevokeSubject,
		TypeRevokeFamily, TypeExpire, TypeTouch, TypeRotate}
}

var baseTypes = func() (t [256]bool) {
	for _, b := range BaseTypes() {
		t[b] = true
	}
	return t
}()

// IsBaseType tells whether t is one of BaseTypes.
func IsBaseType(t Type) bool { return baseTypes[t] }

// Version numbers what this build's state machine does with the commands
// it knows, for changes that add no command type but a field an older
// replica would ignore, or an op a ClientBatch of an older replica refuses,
// and so diverge:
//
//	1: the first release
//	2: revoked families are remembered (FamilyHold)
//	3: a ClientBatch may hold RevokeFamily and RevokeFamilyKind ops
//	4: snapshots are written in version 2 of the stream (snapstored.go)
//
// The leader writes a version's fields and ops only after a Fence of that
// version (Downgrade until then); a node writes a snapshot in the stream
// of a version only after that version's fence.
const Version = 4

// ErrNeedsVersion is why Downgrade cannot return an entry as replicas of
// an older version apply it: it holds what they would apply otherwise
// (an op their batches refuse). It is not proposed until the fence.
var ErrNeedsVersion = errors.New("the write needs a newer version of the state machine on every voter")

// Downgrade returns entry as replicas of version v apply it as this build
// does: the fields of later versions are cleared. A command without such
// fields is returned as it is. A ClientBatch holding an op of a later
// version cannot be: the error wraps ErrNeedsVersion.
func Downgrade(entry []byte, v int) ([]byte, error) {
	if v >= Version {
		return entry, nil
	}
	c, err := decodeEntry(entry)
	if err != nil {
		return nil, err
	}
	switch c := c.(type) {
	case *Consume:
		if v >= 2 || c.FamilyHold == 0 {
			return entry, nil
		}
		c.FamilyHold = 0
	case *Rotate:
		if v >= 2 || c.FamilyHold == 0 {
			return entry, nil
		}
		c.FamilyHold = 0
	case *RevokeFamily:
		if v >= 2 || c.FamilyHold == 0 {
			return entry, nil
		}
		c.FamilyHold = 0
	case *ClientBatch:
		changed := false
		for i, op := range c.Ops {
			if len(op) > 0 && opVersion(Type(op[0])) > v {
				return nil, fmt.Errorf("%w: batch op %d is of type %d, which a batch holds from version %d on; the log is at %d",
					ErrNeedsVersion, i, op[0], opVersion(Type(op[0])), v)
			}
			down, err := Downgrade(op, v)
			if err != nil {
				return nil, err
			}
			if &down[0] != &op[0] {
				c.Ops[i], changed = down, true
			}
		}
		if !changed {
			return entry, nil
		}
	default:
		return entry, nil
	}
	return Encode(c)
}
