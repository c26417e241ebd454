#!/usr/bin/env bash
# The project's test command: runs every test target from the repository root.
#
# Arguments are passed to `cargo test`, e.g. `scripts/test.sh keys::` or
# `scripts/test.sh -- --nocapture`.
#
# Helpers that tests need (storage servers and the like) are started with `start_helper`, which
# records their PIDs; the EXIT trap stops them however the script ends.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

started_pids=()

stop_helpers() {
    local pid
    for pid in ${started_pids[@]+"${started_pids[@]}"}; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_helpers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_helper COMMAND [ARGS...]: runs COMMAND in the background and stops it on exit.
start_helper() {
    "$@" &
    started_pids+=("$!")
}

# tests/systemd_unit.rs asks systemd-analyze about the unit; Debian has it in the systemd package.
if ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd
fi

# moto, azurite and fake-gcs-server for the publishing tests (installed on first use, cached).
# shellcheck source=scripts/storage-servers.sh
source scripts/storage-servers.sh
start_storage_servers

cargo test --workspace --all-targets "$@"
