#!/usr/bin/env bash
# Builds keyrot's release artifacts from the checkout, into target/package/: a fully static
# x86_64 binary (musl) and the Debian package made from that same binary, with the man pages and
# shell completions generated from the command-line definitions. SOURCE_DATE_EPOCH is the last
# commit's time, so no date in the package depends on when it was built.
#
# Usage: scripts/package.sh           build the binary and the package
#        scripts/package.sh --check   build them, then check them: the binary is static and runs
#                                     `--version` and a sandbox rotation in an empty root (chroot);
#                                     the package installs into a scratch root (`dpkg --root`)
#                                     with the expected files and modes, leaves the unit disabled,
#                                     and removes and purges cleanly; a second package build gives
#                                     the same bytes. Needs root.
#
# Installs what it needs when missing: musl-tools (apt-get), the Rust musl target (rustup),
# cargo-deb (cargo install --locked).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *)
        echo "usage: scripts/package.sh [--check]" >&2
        exit 2
        ;;
esac

triple=x86_64-unknown-linux-musl
out=target/package
generated=$out/generated
bin=target/$triple/release/keyrot
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=$out/keyrot_${version}_amd64.deb
static=$out/keyrot-$version-x86_64-linux-musl

step() {
    printf '\n== %s (%ds so far)\n' "$1" "$SECONDS"
}

fail() {
    echo "package check failed: $*" >&2
    exit 1
}

step "Tools: musl-gcc, the $triple target, cargo-deb"
if ! command -v musl-gcc >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq musl-tools
fi
if ! rustup target list --installed | grep -qx "$triple"; then
    rustup target add "$triple"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --locked cargo-deb
fi

SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
export SOURCE_DATE_EPOCH

step "The static binary ($triple, release)"
# aws-lc-sys (the TLS stack's cryptography) compiles C, which must be built against musl too.
# The checkout's and cargo's paths are remapped so that where it was built is not in the binary;
# the symbols are stripped, as a distribution strips its binaries.
CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="--remap-path-prefix=$PWD=/keyrot --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$triple" --bin keyrot

# A dynamic binary names its loader (PT_INTERP); `file` and `ldd` both see it.
described=$(file -b "$bin")
case "$described" in
    *"dynamically linked"* | *interpreter*) fail "$bin is not static: $described" ;;
    *"statically linked"* | *"static-pie linked"*) ;;
    *) fail "$bin: cannot tell how it is linked: $described" ;;
esac
linked=$(ldd "$bin" 2>&1 || true)
case "$linked" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) fail "ldd $bin: $linked" ;;
esac
echo "$bin: $described"

step "Man pages and completions"
rm -rf "$generated"
"$bin" man --out-dir "$generated/man"
# -n: no file name or time in the gzip header, so the pages compress to the same bytes each time.
gzip -9 -n "$generated"/man/*.1
mkdir -p "$generated/completions"
"$bin" completions bash >"$generated/completions/keyrot.bash"
"$bin" completions zsh >"$generated/completions/_keyrot"
"$bin" completions fish >"$generated/completions/keyrot.fish"

step "The Debian package"
# --no-build: the binary above is the one shipped; it is stripped already.
cargo deb --no-build --no-strip --target "$triple" --output "$deb"
install -m 0755 "$bin" "$static"
(cd "$out" && sha256sum "$(basename "$deb")" "$(basename "$static")" >SHA256SUMS)
ls -l "$deb" "$static"

if ! $check; then
    exit 0
fi

[ "$(id -u)" = 0 ] || fail "--check needs root (chroot, dpkg --root)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

step "The static binary alone in an empty root: --version and a sandbox rotation"
empty=$scratch/empty
mkdir -p "$empty/sandbox"
cp "$static" "$empty/keyrot"
cp rotation-plans/sandbox.yaml "$empty/sandbox/plan.yaml"
# Nothing but the binary and the plan: no loader, no libc, no /etc, no /proc, no /dev.
in_empty() {
    chroot "$empty" /keyrot "$@"
}
kid_of() {
    in_empty inspect "$1" | sed -n 's/.* kid \([^ ]*\) .*/\1/p'
}
said=$(in_empty --version)
[ "$said" = "keyrot $version" ] || fail "--version said '$said', not 'keyrot $version'"
echo "$said"
in_empty validate -c /sandbox/plan.yaml
in_empty init -c /sandbox/plan.yaml >/dev/null
before=$(kid_of /sandbox/sandbox/pki/sa.key)
in_empty rotate -c /sandbox/plan.yaml >"$scratch/rotate.log" || {
    cat "$scratch/rotate.log"
    fail "the sandbox rotation failed"
}
after=$(kid_of /sandbox/sandbox/pki/sa.key)
[ -n "$before" ] && [ -n "$after" ] && [ "$before" != "$after" ] ||
    fail "the rotation did not change the signing key ($before -> $after)"
published=$(cat "$empty/sandbox/sandbox/www/openid/v1/jwks")
case "$published" in
    *"\"$before\""*) fail "the published JWKS still lists the retired key $before" ;;
    *"\"$after\""*) ;;
    *) fail "the published JWKS lacks the new key $after: $published" ;;
esac
echo "rotated: $before -> $after, published"

step "The package in a scratch root (dpkg --root)"
root=$scratch/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
: >"$root/var/lib/dpkg/status"
# chrootless: the maintainer scripts run from the host with DPKG_ROOT set, as a root of their
# own would have no shell to run them.
dpkg_root() {
    dpkg --root="$root" --force-script-chrootless --log=/dev/null "$@"
}
dpkg_root --install "$deb"

# MODE PATH: the path exists with that mode, owned by root.
expect() {
    local got
    got=$(stat -c '%a %U:%G' "$root/$2" 2>/dev/null) || fail "$2 is not installed"
    [ "$got" = "$1 root:root" ] || fail "$2 is $got, not $1 root:root"
}
expect 755 usr/bin/keyrot
expect 644 usr/lib/systemd/system/keyrot.service
for plan in rotation-plans/*.yaml; do
    expect 644 "usr/share/doc/keyrot/examples/$(basename "$plan")"
done
expect 644 usr/share/doc/keyrot/README.md
expect 644 usr/share/doc/keyrot/docs/design.md
expect 644 usr/share/doc/keyrot/docs/probe-rbac.yaml
expect 644 usr/share/doc/keyrot/copyright
for page in keyrot keyrot-doctor keyrot-run keyrot-rotate keyrot-status; do
    expect 644 "usr/share/man/man1/$page.1.gz"
done
expect 644 usr/share/bash-completion/completions/keyrot
expect 644 usr/share/zsh/vendor-completions/_keyrot
expect 644 usr/share/fish/vendor_completions.d/keyrot.fish
# Made by postinst: the plan's directory and the state directory, root only.
expect 700 etc/keyrot
expect 700 var/lib/keyrot

writable=$(find "$root/usr" "$root/etc/keyrot" "$root/var/lib/keyrot" ! -type l -perm /022)
[ -z "$writable" ] || fail "writable by others: $writable"
[ ! -e "$root/etc/systemd" ] || fail "the package enabled something: $(find "$root/etc/systemd")"
grep -qx 'ExecStart=/usr/bin/keyrot run -c /etc/keyrot/plan.yaml' \
    "$root/usr/lib/systemd/system/keyrot.service" || fail "the unit does not run /usr/bin/keyrot"
said=$("$root/usr/bin/keyrot" --version)
[ "$said" = "keyrot $version" ] || fail "the installed keyrot says '$said'"
depends=$(dpkg-deb --field "$deb" Depends)
[ -z "$depends" ] || fail "the static binary's package depends on: $depends"
zcat "$root/usr/share/man/man1/keyrot-doctor.1.gz" | grep -q '^\.TH keyrot-doctor 1' ||
    fail "keyrot-doctor.1 is not a man page"
bash -c "source '$root/usr/share/bash-completion/completions/keyrot' && complete -p keyrot" \
    >/dev/null || fail "the bash completion does not complete keyrot"
echo "installed: files, modes, postinst's directories, the unit disabled"

step "Removed, then purged"
echo "# the operator's plan" >"$root/etc/keyrot/plan.yaml"
dpkg_root --remove keyrot
[ ! -e "$root/usr/bin/keyrot" ] || fail "remove left usr/bin/keyrot"
expect 700 var/lib/keyrot
dpkg_root --purge keyrot
[ ! -e "$root/var/lib/keyrot" ] || fail "purge left var/lib/keyrot"
[ -f "$root/etc/keyrot/plan.yaml" ] || fail "purge deleted the operator's plan"
echo "remove kept the state, purge deleted it and kept the operator's plan"

step "The package built again: the same bytes"
cargo deb --no-build --no-strip --target "$triple" --output "$scratch/again.deb" >/dev/null
cmp "$deb" "$scratch/again.deb" || fail "a second build of the package differs"

step "Checked"
echo "package $(stat -c %s "$deb") bytes, static binary $(stat -c %s "$static") bytes, ${SECONDS}s"
