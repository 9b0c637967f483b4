#!/usr/bin/env bash
# The Debian package: builds it with cargo-deb, checks that it holds what an operator needs
# (dpkg-deb -c and the conffiles), and runs lintian, which must report no error.
# Prints the path of the .deb on its last line.
#
# Usage: tests/system/package.sh   (needs cargo-deb; lintian for the last check)
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
deb=$(cargo deb --quiet 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { cargo deb; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
expected=target/debian/roomsync_${version}-1_${arch}.deb
[ "$deb" -ef "$expected" ] || { echo "cargo deb built $deb, not $expected" >&2; exit 1; }

echo "-- dpkg-deb -c $expected"
listing=$(dpkg-deb -c "$deb")
printf '%s\n' "$listing"
missing=0
for path in \
    ./usr/bin/roomsync \
    ./usr/lib/systemd/system/roomsync.service \
    ./usr/lib/sysusers.d/roomsync.conf \
    ./etc/roomsync/roomsync.toml \
    ./usr/share/man/man1/roomsync.1.gz \
    ./usr/share/man/man1/roomsync-status.1.gz \
    ./usr/share/man/man1/roomsync-stand-in.1.gz \
    ./usr/share/bash-completion/completions/roomsync \
    ./usr/share/zsh/vendor-completions/_roomsync \
    ./usr/share/fish/vendor_completions.d/roomsync.fish \
    ./usr/share/doc/roomsync/README.md \
    ./usr/share/doc/roomsync/schema.md \
    ./usr/share/doc/roomsync/copyright \
    ./usr/share/doc/roomsync/changelog.Debian.gz; do
    if ! awk '{print $6}' <<<"$listing" | grep -qxF "$path"; then
        echo "missing from the package: $path" >&2
        missing=1
    fi
done
[ "$missing" -eq 0 ] || exit 1

echo "-- conffiles and maintainer scripts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/DEBIAN"
cat "$work/DEBIAN/conffiles"
grep -qx /etc/roomsync/roomsync.toml "$work/DEBIAN/conffiles"
grep -q 'ExecStart=/usr/bin/roomsync ' < <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/roomsync.service)
grep -q 'systemd-sysusers' "$work/DEBIAN/postinst"
grep -q 'deb-systemd-helper purge' "$work/DEBIAN/postrm"
grep -q 'rm -rf /etc/roomsync' "$work/DEBIAN/postrm"
ls "$work/DEBIAN"

echo "-- lintian"
if command -v lintian >/dev/null; then
    # Errors fail; warnings and informational tags are listed (the README says why they stay).
    lintian --fail-on error --display-info --tag-display-limit 0 "$deb"
    echo "lintian: no errors"
else
    echo "lintian skipped: lintian is not installed (apt-get install lintian)"
fi
echo "$expected"
