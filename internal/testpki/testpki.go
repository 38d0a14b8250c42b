// Package testpki issues throwaway certificates for tests: a CA held in
// memory and node identities written as PEM files under the test's
// temporary directory (internal/pki, with a test's failures). It imports
// only the standard library and internal/pki, so any package's tests can
// use it without an import cycle.
package testpki

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/pki"
)

// validity of every certificate issued here; tests never run that long.
const validity = 24 * time.Hour

// CA is an ECDSA P-256 certificate authority that lives for one test.
type CA struct{ ca *pki.CA }

// Files names the PEM files of one identity (see pki.Files).
type Files = pki.Files

// New creates a CA with a fresh key.
func New(t testing.TB) *CA {
	t.Helper()
	ca, err := pki.NewCA("testpki CA", validity)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return &CA{ca}
}

// Issue writes a node identity named name: IP SAN 127.0.0.1, DNS localhost,
// usable as both TLS server and client, valid for 24 hours.
func (ca *CA) Issue(t testing.TB, name string) Files {
	t.Helper()
	return ca.IssueWithUsage(t, name, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// IssueWithUsage is Issue with the given extended key usages instead, for
// tests of certificates that lack one.
func (ca *CA) IssueWithUsage(t testing.TB, name string, usage ...x509.ExtKeyUsage) Files {
	t.Helper()
	f, err := ca.ca.Issue(t.TempDir(), pki.Identity{Name: name, Usage: usage})
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return f
}
