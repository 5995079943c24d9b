#!/usr/bin/env bash
# Demo PKI for `make run-tls` (ARCHITECTURE §7, DIGEST §10): a CA, a server certificate per demo node
# (127.0.0.1 / localhost) and a client certificate per node whose subject CN is the node's OICP ID,
# which is what the peers' certificate_identity names. Demo only: keys are unencrypted, valid 30 days.
# Usage: deploy/scripts/make-certs.sh [directory]   (default deploy/certs; rerun to renew —
# running nodes pick the new files up without a restart)
set -euo pipefail

DIR="${1:-deploy/certs}"
DAYS=30
mkdir -p "$DIR"
cd "$DIR"

newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${newkey[@]}" -keyout ca.key -out ca.pem -days "$DAYS" -subj "/CN=oicp-p2p demo CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# issue NAME CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
issue() {
    local name=$1 cn=$2 usage=$3 san=${4:-}
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "extendedKeyUsage=$usage"
        if [[ -n $san ]]; then echo "subjectAltName=$san"; fi
    } > "$name.ext"
    openssl req -new "${newkey[@]}" -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" \
        -days "$DAYS" -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue demo-cpo-server localhost serverAuth "IP:127.0.0.1,DNS:localhost"
issue demo-emp-server localhost serverAuth "IP:127.0.0.1,DNS:localhost"
issue demo-cpo-client 'DE*GEF' clientAuth
issue demo-emp-client 'DE-GDF' clientAuth
chmod 600 ./*.key
echo "demo certificates written to $DIR"
