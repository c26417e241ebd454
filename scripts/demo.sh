#!/usr/bin/env bash
# Builds keyrot, generates a service-account key pair in ./demo/ and prints the JWKS and the
# discovery document kube-apiserver would serve for it.
#
# Once sandbox rotations land, this becomes a complete rotation against a local stand-in
# apiserver; for now it shows the key and document half of keyrot.
#
# Usage: scripts/demo.sh [ISSUER]   (default: https://issuer.example.com)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

issuer="${1:-https://issuer.example.com}"
dir=demo

step() {
    printf '\n== %s\n' "$1"
}

# Shows each keyrot command, then runs it through cargo (a no-op build once built).
keyrot() {
    printf '$ keyrot %s\n' "$*"
    cargo run --quiet --bin keyrot -- "$@"
}

step "Building keyrot (cargo build --bin keyrot)"
cargo build --bin keyrot

step "Generating an RS256 key pair in $dir/ (kubeadm's sa.key and sa.pub)"
mkdir -p "$dir"
rm -f "$dir/sa.key" "$dir/sa.pub"
keyrot keygen --alg RS256 --private "$dir/sa.key" --public "$dir/sa.pub"
echo "(the line above is the key's kid)"

step "What kube-apiserver makes of each file"
keyrot inspect "$dir/sa.pub" "$dir/sa.key"

step "The JWKS kube-apiserver would serve at /openid/v1/jwks"
keyrot jwks "$dir/sa.pub"

step "The discovery document at /.well-known/openid-configuration"
keyrot discovery --issuer "$issuer" "$dir/sa.pub"

step "Done: the key pair is in $dir/ (ignored by git)"
