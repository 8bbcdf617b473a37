#!/usr/bin/env bash
# Checks config/iotconnect.service (the bare-binary install) with systemd-analyze verify. The unit names
# /usr/local/bin/iotconnect and /etc/iotconnect files (scripts/check-deb.sh checks the packaged copy), so the check runs against a private root
# (--root) holding the built binary and the sample files at those paths.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${IOTCONNECT_BIN:-target/debug/iotconnect}"
[ -x "$bin" ] || cargo build --quiet
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/iotconnect" "$root/etc/systemd/system" "$root/bin"
cp "$bin" "$root/usr/local/bin/iotconnect"
cp /bin/kill "$root/bin/kill"
cp config/*.properties "$root/etc/iotconnect/"
cp config/iotconnect.service "$root/etc/systemd/system/iotconnect.service"
# The standard targets the unit depends on by default (sysinit.target, multi-user.target, ...).
mkdir -p "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/system"
out="$(systemd-analyze verify --root="$root" --man=no "$root/etc/systemd/system/iotconnect.service" 2>&1 || true)"
# Unknown users are fine in a private root; anything else is a finding.
findings="$(printf '%s\n' "$out" | grep -v -e '^$' -e "Failed to resolve user" -e "Failed to resolve group" -e "uses User= or Group= which" || true)"
if [ -n "$findings" ]; then
  echo "$findings"
  echo "systemd-analyze verify: FAILED"
  exit 1
fi
echo "systemd-analyze verify config/iotconnect.service: ok"
