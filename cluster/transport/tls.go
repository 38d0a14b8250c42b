package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a node's mutual TLS identity.
type TLSFiles struct{ Cert, Key, CA string }

// LoadTLS builds the node-to-node TLS configuration: this node's
// certificate, and the CA that every peer's certificate (client or server
// side) must be signed by. Peers must carry ExtKeyUsage ServerAuth and
// ClientAuth, since every node both dials and accepts. Server names are not
// checked: nodes are addressed by IP and ids move, so any certificate the CA
// signed is a cluster member.
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load node certificate %s (key %s): %w", f.Cert, f.Key, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster CA %s: no PEM certificate found", f.CA)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse node certificate %s: %w", f.Cert, err)
		}
	}
	// Peers would reject this certificate anyway; failing here names the
	// misconfiguration at start instead of in every handshake.
	if err := verifyNodeCert(leaf, parseChain(cert.Certificate[1:]), roots); err != nil {
		return nil, fmt.Errorf("node certificate %s against CA %s: %w", f.Cert, f.CA, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Server side: the standard library verifies the client's chain.
		ClientCAs:  roots,
		ClientAuth: tls.RequireAndVerifyClientCert,
		// Client side: the standard library's check would also demand a
		// matching server name, which node certificates do not promise.
		// VerifyConnection below does the full chain verification instead,
		// so verification is replaced, not switched off.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer presented no certificate")
			}
			return verifyNodeCert(cs.PeerCertificates[0], cs.PeerCertificates[1:], roots)
		},
	}, nil
}

func parseChain(ders [][]byte) []*x509.Certificate {
	var certs []*x509.Certificate
	for _, der := range ders {
		if c, err := x509.ParseCertificate(der); err == nil {
			certs = append(certs, c)
		}
	}
	return certs
}

// verifyNodeCert checks that leaf chains to roots and may act as both
// server and client. KeyUsages in VerifyOptions means "any of", hence one
// verification per usage.
func verifyNodeCert(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool) error {
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			return fmt.Errorf("certificate %q: %w", leaf.Subject.CommonName, err)
		}
	}
	return nil
}
