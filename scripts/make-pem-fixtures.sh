#!/usr/bin/env bash
# Generates the PEM fixtures in tests/data/pem/ and their oracle, expected.tsv, with openssl only.
#
# Every kid and alg in expected.tsv is computed here by openssl, never by keyrot:
#   kid = base64url, unpadded, of SHA-256 over the DER SubjectPublicKeyInfo
#   alg = RS256 for RSA; ES256/ES384/ES512 for the NIST curve openssl names
# Which blocks kube-apiserver accepts or skips follows client-go's keyutil.ParsePublicKeysPEM
# (labels ignored; RSA PKCS#1/PKCS#8 private, PKIX public, certificate, SEC1 EC private).
#
# Re-running replaces every key with a fresh one and rewrites expected.tsv to match; the tests
# read the committed files and never run this script. Usage: scripts/make-pem-fixtures.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/tests/data/pem"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$out"
cd "$out"
rm -f ./*.pem expected.tsv

ossl() { openssl "$@" 2>/dev/null; }

# kid of the SPKI PEM file $1.
kid_of_spki() {
    openssl pkey -pubin -in "$1" -outform DER |
        openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='
}

# alg of the SPKI PEM file $1, from openssl's own description of the key.
alg_of_spki() {
    local text
    text=$(openssl pkey -pubin -in "$1" -noout -text)
    case "$text" in
        *"NIST CURVE: P-256"*) echo ES256 ;;
        *"NIST CURVE: P-384"*) echo ES384 ;;
        *"NIST CURVE: P-521"*) echo ES512 ;;
        *Modulus:*) echo RS256 ;;
        *) echo "unexpected key type in $1" >&2; exit 1 ;;
    esac
}

# SPKI of a private key ($2 = key) or certificate ($2 = cert) file $1, written to $work.
spki_of() {
    local spki="$work/$(basename "$1").spki"
    case "$2" in
        key) openssl pkey -in "$1" -pubout -out "$spki" ;;
        cert) openssl x509 -in "$1" -pubkey -noout >"$spki" ;;
        pub) openssl pkey -pubin -in "$1" -pubout -out "$spki" ;;
    esac
    echo "$spki"
}

rows=()
# row FILE BLOCK key FORM SOURCE KIND: block BLOCK of FILE is the key of SOURCE (read as KIND).
key_row() {
    local spki
    spki=$(spki_of "$5" "$6")
    rows+=("$1	$2	key	$4	$(alg_of_spki "$spki")	$(kid_of_spki "$spki")")
}
# skip_row FILE BLOCK REASON: kube-apiserver skips block BLOCK of FILE.
skip_row() {
    rows+=("$1	$2	skip	$3	-	-")
}

subject="/CN=keyrot test fixture"

# --- RSA key A: PKCS#1, PKCS#8, SPKI, PKCS#1 public, encrypted ---
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/a.pkcs8"
ossl rsa -in "$work/a.pkcs8" -traditional -out rsa-pkcs1-private.pem
ossl pkey -in "$work/a.pkcs8" -out rsa-pkcs8-private.pem
ossl pkey -in "$work/a.pkcs8" -pubout -out rsa-spki-public.pem
ossl rsa -in "$work/a.pkcs8" -RSAPublicKey_out -out rsa-pkcs1-public.pem
ossl rsa -in "$work/a.pkcs8" -traditional -aes256 -passout pass:fixture -out rsa-encrypted-legacy.pem
ossl pkcs8 -topk8 -in "$work/a.pkcs8" -v2 aes256 -passout pass:fixture -out rsa-encrypted-pkcs8.pem
key_row rsa-pkcs1-private.pem 1 key pkcs1-private rsa-pkcs1-private.pem key
key_row rsa-pkcs8-private.pem 1 key pkcs8-private rsa-pkcs8-private.pem key
key_row rsa-spki-public.pem 1 key spki rsa-spki-public.pem pub
skip_row rsa-pkcs1-public.pem 1 rsa-pkcs1-public
skip_row rsa-encrypted-legacy.pem 1 encrypted
skip_row rsa-encrypted-pkcs8.pem 1 not-a-key

# --- RSA key B: self-signed certificate ---
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/b.pkcs8"
ossl req -x509 -new -key "$work/b.pkcs8" -subj "$subject" -days 36500 -out rsa-certificate.pem
key_row rsa-certificate.pem 1 key certificate rsa-certificate.pem cert

# --- EC keys: SEC1 private and SPKI public on each curve; P-256 also as PKCS#8 ---
for curve in 256:prime256v1 384:secp384r1 521:secp521r1; do
    bits=${curve%%:*}
    name=${curve#*:}
    ossl ecparam -name "$name" -genkey -noout -out "ec-p$bits-sec1-private.pem"
    ossl pkey -in "ec-p$bits-sec1-private.pem" -pubout -out "ec-p$bits-spki-public.pem"
    key_row "ec-p$bits-sec1-private.pem" 1 key sec1-private "ec-p$bits-sec1-private.pem" key
    key_row "ec-p$bits-spki-public.pem" 1 key spki "ec-p$bits-spki-public.pem" pub
done
ossl pkcs8 -topk8 -nocrypt -in ec-p256-sec1-private.pem -out ec-p256-pkcs8-private.pem
skip_row ec-p256-pkcs8-private.pem 1 pkcs8-ec-private

# --- EC P-256 key D: self-signed certificate ---
ossl ecparam -name prime256v1 -genkey -noout -out "$work/d.sec1"
ossl req -x509 -new -key "$work/d.sec1" -subj "$subject" -days 36500 -out ec-p256-certificate.pem
key_row ec-p256-certificate.pem 1 key certificate ec-p256-certificate.pem cert

# --- EC P-256 key G: `openssl ecparam -genkey` output, EC PARAMETERS then EC PRIVATE KEY ---
ossl ecparam -name prime256v1 -genkey -out ec-p256-ecparam-genkey.pem
skip_row ec-p256-ecparam-genkey.pem 1 ec-parameters
key_row ec-p256-ecparam-genkey.pem 2 key sec1-private ec-p256-ecparam-genkey.pem key

# --- Ed25519: neither RSA nor ECDSA ---
ossl genpkey -algorithm ed25519 -out ed25519-private.pem
ossl pkey -in ed25519-private.pem -pubout -out ed25519-public.pem
skip_row ed25519-private.pem 1 ed25519
skip_row ed25519-public.pem 1 ed25519

# --- Misleading labels: kube-apiserver ignores the label and reads the bytes ---
sed -e 's/PUBLIC KEY/CERTIFICATE/' ec-p256-spki-public.pem >ec-p256-spki-labelled-certificate.pem
sed -e 's/PUBLIC KEY/FOO/' rsa-spki-public.pem >rsa-spki-labelled-foo.pem
sed -e 's/RSA PRIVATE KEY/PUBLIC KEY/' rsa-pkcs1-private.pem >rsa-pkcs1-private-labelled-public-key.pem
key_row ec-p256-spki-labelled-certificate.pem 1 key spki ec-p256-spki-public.pem pub
key_row rsa-spki-labelled-foo.pem 1 key spki rsa-spki-public.pem pub
key_row rsa-pkcs1-private-labelled-public-key.pem 1 key pkcs1-private rsa-pkcs1-private.pem key

# --- A bundle: several blocks, text around and between them, skipped blocks, a duplicate ---
{
    echo "Service-account verification keys, assembled by hand."
    echo
    cat rsa-spki-public.pem
    echo "the next block is PKCS#1 and kube-apiserver skips it"
    cat rsa-pkcs1-public.pem
    cat ec-p384-spki-public.pem
    echo "  indented notes: -----BEGIN does not start this line"
    cat ed25519-public.pem
    echo
    cat ec-p256-certificate.pem
    cat ec-p256-ecparam-genkey.pem
    echo "# the first key again: duplicates are kept"
    cat rsa-pkcs1-private.pem
    echo "trailing text"
} >mixed.pem
key_row mixed.pem 1 key spki rsa-spki-public.pem pub
skip_row mixed.pem 2 rsa-pkcs1-public
key_row mixed.pem 3 key spki ec-p384-spki-public.pem pub
skip_row mixed.pem 4 ed25519
key_row mixed.pem 5 key certificate ec-p256-certificate.pem cert
skip_row mixed.pem 6 ec-parameters
key_row mixed.pem 7 key sec1-private ec-p256-ecparam-genkey.pem key
key_row mixed.pem 8 key pkcs1-private rsa-pkcs1-private.pem key

# --- The same bundle with CRLF line endings ---
sed -e 's/$/\r/' mixed.pem >mixed-crlf.pem
for row in "${rows[@]}"; do
    case "$row" in
        mixed.pem*) rows+=("mixed-crlf.pem${row#mixed.pem}") ;;
    esac
done

# --- The oracle: one row per PEM block, in file order ---
{
    printf '# Generated by scripts/make-pem-fixtures.sh; values computed by openssl.\n'
    printf '# file\tblock\tresult\tform_or_reason\talg\tkid\n'
    printf '%s\n' "${rows[@]}"
} >expected.tsv

echo "wrote $(ls | wc -l) files to tests/data/pem"
