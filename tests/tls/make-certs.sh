#!/usr/bin/env bash
# make-certs.sh: writes the TLS test certificates of tests/tls/ (used by tests/test_client.c for
# tls+tcp:// on loopback): a test CA (ca.pem), a server certificate it signs for localhost and
# 127.0.0.1 followed by its key (server.pem: NNG wants both in one file; ECDSA P-256, valid 100
# years), and an unrelated CA that must be refused (other-ca.pem).
# Test material only: these keys are public. Needs the openssl command; rerun only to renew.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$tmp/ca.key" -out ca.pem -days 36500 -subj "/CN=llorch test CA"
openssl req "${ec[@]}" -keyout "$tmp/server.key" -out "$tmp/server.csr" -subj "/CN=localhost"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$tmp/ext.cnf"
openssl x509 -req -in "$tmp/server.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -out "$tmp/server.crt" -days 36500 -extfile "$tmp/ext.cnf"
cat "$tmp/server.crt" "$tmp/server.key" >server.pem
openssl req -x509 "${ec[@]}" -keyout "$tmp/other.key" -out other-ca.pem -days 36500 \
  -subj "/CN=other CA"
