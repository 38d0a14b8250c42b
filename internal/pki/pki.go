// Package pki issues the certificates of node-to-node mutual TLS: an
// ECDSA P-256 certificate authority held in memory and node identities
// written as PEM files. The benchmarks make one for each run, the tests
// one for each test (internal/testpki). It imports only the standard
// library, so any package can use it without an import cycle.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority whose key lives only in this process.
type CA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	pem      []byte
	validity time.Duration
}

// Files names the PEM files of one identity: its certificate, its private
// key and the certificate of the CA that signed it. The fields match
// transport.TLSFiles (cluster/transport), so a conversion is enough.
type Files struct{ Cert, Key, CA string }

// Identity describes a node certificate.
type Identity struct {
	Name string // the subject's common name
	// IPs and DNS are the subject alternative names; default 127.0.0.1
	// and localhost. Nodes check a peer's chain and usages, not its names.
	IPs []net.IP
	DNS []string
	// Usage are the extended key usages; default both TLS server and
	// client, which every node needs.
	Usage []x509.ExtKeyUsage
}

// NewCA creates a CA with a fresh key, named name; it and every
// certificate it issues are valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Minute), // tolerate clock skew between processes and kernel
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), validity: validity}, nil
}

// Issue writes the identity id into dir (created if need be) as node.pem,
// node-key.pem (mode 0600) and ca.pem.
func (ca *CA) Issue(dir string, id Identity) (Files, error) {
	if id.IPs == nil && id.DNS == nil {
		id.IPs, id.DNS = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
	}
	if id.Usage == nil {
		id.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("pki: generate key for %s: %w", id.Name, err)
	}
	sn, err := serial()
	if err != nil {
		return Files{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: id.Name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ca.validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  id.Usage,
		IPAddresses:  id.IPs,
		DNSNames:     id.DNS,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Files{}, fmt.Errorf("pki: create certificate for %s: %w", id.Name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Files{}, fmt.Errorf("pki: encode key for %s: %w", id.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("pki: %w", err)
	}
	f := Files{
		Cert: filepath.Join(dir, "node.pem"),
		Key:  filepath.Join(dir, "node-key.pem"),
		CA:   filepath.Join(dir, "ca.pem"),
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{f.CA, ca.pem, 0o644},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return Files{}, fmt.Errorf("pki: write %s: %w", w.path, err)
		}
	}
	return f, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n, nil
}
