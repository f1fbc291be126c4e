#!/usr/bin/env bash
# Certificates for a local TLS test of the Flower deployment (flower/): a throw-away CA and a SuperLink
# certificate for 127.0.0.1 / localhost signed by it. Not for production: the CA key sits beside it.
#   scripts/make_certs.sh DIR   ->  DIR/ca.crt, DIR/ca.key, DIR/server.pem, DIR/server.key
# SuperLink: --ssl-ca-certfile DIR/ca.crt --ssl-certfile DIR/server.pem --ssl-keyfile DIR/server.key
# SuperNode and flwr: --root-certificates DIR/ca.crt (flwr: `root-certificates` in its connection).
set -euo pipefail
dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.crt -subj "/CN=slora-test-ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out server.pem -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
