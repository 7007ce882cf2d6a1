#!/bin/sh
# A self-signed certificate for development and tests only (valid for
# localhost and 127.0.0.1), written to DIR (default: this directory).
# Production: use a certificate from your CA.
set -eu
dir=${1:-$(dirname "$0")}
if [ ! -d "$dir" ] || [ ! -w "$dir" ]; then
    echo "make-dev-cert: $dir is not a writable directory" >&2
    exit 1
fi
if ! out=$(openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
    -keyout "$dir/dev-key.pem" -out "$dir/dev-cert.pem" \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>&1); then
    echo "make-dev-cert: openssl could not make the certificate:" >&2
    echo "$out" >&2
    exit 1
fi
chmod 600 "$dir/dev-key.pem"
echo "made $dir/dev-cert.pem and $dir/dev-key.pem"
echo "clients trust it with: CA_BUNDLE=$dir/dev-cert.pem (stage app), curl --cacert $dir/dev-cert.pem"
