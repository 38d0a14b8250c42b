package token

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
)

// ErrUnseal means sealed secrets could not be opened with the secret
// given.
var ErrUnseal = errors.New("sealed secrets cannot be opened")

const sealInfo = "tokenstore rotation grace v1"

// sealAEAD derives a key from a token's secret, with salt (the cluster's
// hash key, nil without one). The store keeps only a hash of that secret,
// so what is sealed under it can be opened only by whoever presents the
// secret again: a rotated refresh token opens the successor it was given,
// and nothing on disk does. With the salt, a copy of the data without the
// cluster key cannot even test guesses of a low-entropy brought token.
func sealAEAD(salt []byte, secret string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(secret), salt, sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts secrets (printable ASCII, as every token secret is) under
// a key derived from secret and the hasher's key, so that only a holder of
// the cluster key and of secret can open it. A hasher without a key seals
// under a key derived from secret alone.
func (h Hasher) Seal(secret string, secrets ...string) ([]byte, error) {
	return seal(h.key, secret, secrets)
}

// Open reverses Hasher.Seal. Secrets sealed without the key (by a node
// that did not use it yet, within a grace period) open too.
func (h Hasher) Open(secret string, sealed []byte) ([]string, error) {
	out, err := open(h.key, secret, sealed)
	if err != nil && len(h.key) > 0 {
		return open(nil, secret, sealed)
	}
	return out, err
}

func seal(salt []byte, secret string, secrets []string) ([]byte, error) {
	aead, err := sealAEAD(salt, secret)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, []byte(strings.Join(secrets, "\x00")), []byte(sealInfo)), nil
}

func open(salt []byte, secret string, sealed []byte) ([]string, error) {
	aead, err := sealAEAD(salt, secret)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, ErrUnseal
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(sealInfo))
	if err != nil {
		return nil, ErrUnseal
	}
	return strings.Split(string(plain), "\x00"), nil
}
