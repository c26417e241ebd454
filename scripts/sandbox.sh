#!/usr/bin/env bash
# Builds keyrot and runs one complete rotation on the sandbox plan (rotation-plans/sandbox.yaml):
# no cluster needed; the key files, keyrot's state and the published documents live under
# rotation-plans/sandbox/ (ignored by git). Run it again for another rotation.
#
# Usage: scripts/sandbox.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

plan=rotation-plans/sandbox.yaml
sandbox=rotation-plans/sandbox

step() {
    printf '\n== %s\n' "$1"
}

# Shows each keyrot command, then runs the binary built below.
keyrot() {
    printf '$ keyrot %s\n' "$*"
    target/debug/keyrot "$@"
}

step "Building keyrot (cargo build --bin keyrot; a few minutes the first time)"
cargo build --bin keyrot

step "Checking the plan"
keyrot validate -c "$plan"

if [ ! -e "$sandbox/pki/sa.key" ]; then
    step "Creating a first key set (a new cluster's sa.key and sa.pub)"
    keyrot init -c "$plan"
fi

step "The dry run: what the rotation will do, step by step (nothing is written)"
keyrot plan -c "$plan"

step "The rotation: generate, stage, publish, promote, retire"
keyrot rotate -c "$plan"

step "Where things stand now"
keyrot status -c "$plan"

step "The published documents ($sandbox/www), as a cloud would fetch them"
cat "$sandbox/www/.well-known/openid-configuration"; echo
cat "$sandbox/www/openid/v1/jwks"; echo
