package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"redis.test"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return netip.MustParseAddrPort(l.Addr().String()).Port()
}

// TestIntegrationRedisTLS: rediss:// with tls_ca_file reaches a TLS-only redis-server on
// loopback; without the CA (the system's roots), or in plain text, the member fails closed.
func TestIntegrationRedisTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	port := freePort(t)
	s := startRedis(t, "--tls-port", fmt.Sprint(port), "--bind", "127.0.0.1", "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", cert, "--tls-auth-clients", "no")
	url := fmt.Sprintf("rediss://127.0.0.1:%d/0", port)
	good := redisMember(t, s, RedisOptions{URL: url, TLSCAFile: cert}, "a", Refuse, nil, "")
	if ok, err := insert(t, good.store, "k"); !ok || err != nil {
		t.Fatalf("over TLS: %v, %v", ok, err)
	}
	named := redisMember(t, s, RedisOptions{URL: url, TLSCAFile: cert, TLSServerName: "redis.test"}, "n", Refuse, nil, "")
	if ok, err := insert(t, named.store, "k"); ok || err != nil {
		t.Fatalf("replay over TLS with a server name: %v, %v", ok, err)
	}
	for _, tc := range []struct {
		name string
		o    RedisOptions
	}{
		{"unknown CA", RedisOptions{URL: url}},
		{"wrong name", RedisOptions{URL: url, TLSCAFile: cert, TLSServerName: "other.test"}},
		{"plain text", RedisOptions{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := redisMember(t, s, tc.o, "x", Refuse, nil, "")
			if ok, err := insert(t, m.store, "k2-"+tc.name); ok || !errors.Is(err, ErrRedisDown) {
				t.Fatalf("%v, %v; want refused, redis down", ok, err)
			}
		})
	}
}
