#!/usr/bin/env bash
# Builds the Debian package of a (portable) iotconnect binary with dpkg-deb:
#   scripts/package-deb.sh BINARY [OUTDIR]     -> OUTDIR/iotconnect_<version>_amd64.deb (printed)
#
# Contents: /usr/bin/iotconnect; /lib/systemd/system/iotconnect.service (config/iotconnect.service with
# the binary path /usr/bin/iotconnect); /etc/iotconnect/*.properties (config/ samples, conffiles: kept on
# `dpkg -r`, removed on `dpkg -P`); maintainer scripts from packaging/debian (system user iotconnect,
# /var/lib/iotconnect for the offsets file). Depends only on what Ubuntu 18.04 ships (README lists it).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:?usage: scripts/package-deb.sh BINARY [OUTDIR]}"
out="${2:-dist}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
deb="$out/iotconnect_${version}_amd64.deb"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$bin" "$stage/usr/bin/iotconnect"
install -d -m 0755 "$stage/lib/systemd/system" "$stage/etc/iotconnect" "$stage/DEBIAN"
sed 's|/usr/local/bin/iotconnect|/usr/bin/iotconnect|g' config/iotconnect.service \
  >"$stage/lib/systemd/system/iotconnect.service"
chmod 0644 "$stage/lib/systemd/system/iotconnect.service"
conffiles=()
for f in connect-standalone.properties connect-iothub-source.properties connect-iothub-sink.properties; do
  install -m 0644 "config/$f" "$stage/etc/iotconnect/$f"
  conffiles+=("/etc/iotconnect/$f")
done
printf '%s\n' "${conffiles[@]}" >"$stage/DEBIAN/conffiles"
install -d -m 0755 "$stage/usr/share/doc/iotconnect"
install -m 0644 README.md "$stage/usr/share/doc/iotconnect/README.md"
install -m 0644 LICENSE "$stage/usr/share/doc/iotconnect/copyright"
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$stage/DEBIAN/$s"; done

size_kb="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
# Depends: what the binary's NEEDED libraries come from (scripts/check-portable.sh checks that list),
# as the Ubuntu 18.04 packages name them.
cat >"$stage/DEBIAN/control" <<EOF
Package: iotconnect
Version: $version
Architecture: amd64
Maintainer: iotconnect maintainers <iotconnect@localhost>
Installed-Size: $size_kb
Depends: libc6 (>= 2.27), libsasl2-2, adduser
Recommends: libsasl2-modules-gssapi-mit
Suggests: krb5-user
Section: net
Priority: optional
Description: Azure IoT Hub <-> Apache Kafka bridge (Kafka Connect standalone replacement)
 One binary replacing Kafka Connect's standalone worker running the toketi IoT Hub
 source and sink connectors, as in the HDInsight "Kafka + IoT Hub" tutorial: the same
 properties files, offsets file format, REST API and log lines. Kerberos (HDInsight ESP)
 needs libsasl2-modules-gssapi-mit and krb5-user.
EOF
mkdir -p "$out"
# Root-owned files whoever builds it; xz as Ubuntu 18.04's dpkg reads it.
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
