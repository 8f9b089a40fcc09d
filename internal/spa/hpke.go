package spa

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"

	"golang.org/x/crypto/chacha20poly1305"
)

// HPKE suite (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
const (
	kemID  = 0x0020
	kdfID  = 0x0001
	aeadID = 0x0003
)

// hpkeSeal is RFC 9180 SealBase for the suite above, single-shot (sequence
// number 0), with the ephemeral X25519 scalar supplied by the caller so that
// Seal can take its randomness from an io.Reader (crypto/hpke draws it from
// the system). Open uses crypto/hpke; tests check both directions agree.
func hpkeSeal(skE []byte, pkR [32]byte, info, aad, pt []byte) (enc, ct []byte, err error) {
	eph, err := ecdh.X25519().NewPrivateKey(skE)
	if err != nil {
		return nil, nil, err
	}
	pub, err := ecdh.X25519().NewPublicKey(pkR[:])
	if err != nil {
		return nil, nil, err
	}
	dh, err := eph.ECDH(pub)
	if err != nil {
		return nil, nil, err
	}
	enc = eph.PublicKey().Bytes()
	kemSuite := binary.BigEndian.AppendUint16([]byte("KEM"), kemID)
	kemCtx := append(append([]byte{}, enc...), pkR[:]...)
	prk := labeledExtract(kemSuite, nil, "eae_prk", dh)
	shared := labeledExpand(kemSuite, prk, "shared_secret", kemCtx, 32)

	suite := []byte("HPKE")
	suite = binary.BigEndian.AppendUint16(suite, kemID)
	suite = binary.BigEndian.AppendUint16(suite, kdfID)
	suite = binary.BigEndian.AppendUint16(suite, aeadID)
	ctx := []byte{0} // mode_base
	ctx = append(ctx, labeledExtract(suite, nil, "psk_id_hash", nil)...)
	ctx = append(ctx, labeledExtract(suite, nil, "info_hash", info)...)
	secret := labeledExtract(suite, shared, "secret", nil)
	key := labeledExpand(suite, secret, "key", ctx, chacha20poly1305.KeySize)
	nonce := labeledExpand(suite, secret, "base_nonce", ctx, chacha20poly1305.NonceSize)
	a, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, nil, err
	}
	return enc, a.Seal(nil, nonce, pt, aad), nil
}

func labeledExtract(suite, salt []byte, label string, ikm []byte) []byte {
	in := append([]byte("HPKE-v1"), suite...)
	in = append(in, label...)
	in = append(in, ikm...)
	prk, err := hkdf.Extract(sha256.New, in, salt)
	if err != nil {
		panic(err)
	}
	return prk
}

func labeledExpand(suite, prk []byte, label string, info []byte, n int) []byte {
	in := binary.BigEndian.AppendUint16(nil, uint16(n))
	in = append(in, "HPKE-v1"...)
	in = append(in, suite...)
	in = append(in, label...)
	in = append(in, info...)
	out, err := hkdf.Expand(sha256.New, prk, string(in), n)
	if err != nil {
		panic(err)
	}
	return out
}
