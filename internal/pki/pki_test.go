package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/cluster/transport"
	"github.com/tokenstore/tokenstore/internal/pki"
)

func TestIssueWritesANodeIdentityTheClusterLoads(t *testing.T) {
	ca, err := pki.NewCA("run CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP("10.77.0.2")
	f, err := ca.Issue(filepath.Join(t.TempDir(), "n1"), pki.Identity{Name: "n1", IPs: []net.IP{ip}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadTLS(transport.TLSFiles(f)); err != nil {
		t.Fatalf("LoadTLS of an issued identity: want it accepted, got %v", err)
	}
	if st, err := os.Stat(f.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: want mode 0600, got %v (%v)", st.Mode(), err)
	}
	b, err := os.ReadFile(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if cert.Subject.CommonName != "n1" || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(ip) ||
		!slices.Equal(cert.ExtKeyUsage, want) {
		t.Errorf("want CN n1, IP SAN %s, usages %v; got %s, %v, %v", ip, want, cert.Subject.CommonName, cert.IPAddresses, cert.ExtKeyUsage)
	}
}
