#!/bin/sh
# A self-signed certificate for development and tests only (valid for
# localhost and 127.0.0.1). Production: use a certificate from your CA.
set -eu
cd "$(dirname "$0")"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
    -keyout dev-key.pem -out dev-cert.pem \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
chmod 600 dev-key.pem
echo "made ssl/dev-cert.pem and ssl/dev-key.pem; serve with KEYFILE=ssl/dev-key.pem CERTFILE=ssl/dev-cert.pem"
