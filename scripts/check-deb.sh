#!/usr/bin/env bash
# Installs, checks and removes the Debian package on this machine (root only: it really runs dpkg):
#   scripts/check-deb.sh [DEB]        (default dist/iotconnect_<version>_amd64.deb)
#
# dpkg -i; the files at their paths; the three properties files registered as conffiles; the system
# user; /var/lib/iotconnect owned by it; systemd-analyze verify of the installed unit (whose ExecStart
# must name the installed binary); the installed binary runs and validates the installed samples
# (PLACEHOLDERs => exit 78). Then dpkg -r keeps an edited conffile and the state directory, and
# dpkg -P removes /etc/iotconnect and /var/lib/iotconnect. Refuses to touch a machine where iotconnect
# is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
deb="${1:-dist/iotconnect_${version}_amd64.deb}"
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "$deb missing (run scripts/release.sh)"
if [ "$(id -u)" -ne 0 ]; then echo "check-deb: skipped (needs root to run dpkg -i)"; exit 0; fi
if dpkg-query -W -f='${Status}' iotconnect 2>/dev/null | grep -q -v 'not-installed'; then
  fail "iotconnect is already installed here ($(dpkg-query -W -f='${Status}' iotconnect)); not touching it"
fi
[ ! -e /etc/iotconnect ] && [ ! -e /var/lib/iotconnect ] || fail "/etc/iotconnect or /var/lib/iotconnect exists already"
cleanup() { dpkg -P iotconnect >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "package: $deb ($(stat -c %s "$deb") bytes)"
dpkg-deb -f "$deb" Package Version Depends Recommends | sed 's/^/  /'
dpkg -i "$deb"

for f in /usr/bin/iotconnect /lib/systemd/system/iotconnect.service /etc/iotconnect/connect-standalone.properties \
         /etc/iotconnect/connect-iothub-source.properties /etc/iotconnect/connect-iothub-sink.properties; do
  [ -f "$f" ] || fail "$f not installed"
done
conf="$(dpkg-query -W -f='${Conffiles}\n' iotconnect)"
for f in connect-standalone.properties connect-iothub-source.properties connect-iothub-sink.properties; do
  grep -q "/etc/iotconnect/$f " <<<"$conf" || fail "/etc/iotconnect/$f is not a conffile"
done
getent passwd iotconnect >/dev/null || fail "no system user iotconnect"
[ "$(stat -c %U:%G /var/lib/iotconnect)" = iotconnect:iotconnect ] || fail "/var/lib/iotconnect not owned by iotconnect"
[ "$(stat -c %G:%a /etc/iotconnect/connect-iothub-source.properties)" = iotconnect:640 ] || fail "source file not 0640 root:iotconnect"
grep -q '^offset.storage.file.filename=/var/lib/iotconnect/' /etc/iotconnect/connect-standalone.properties ||
  fail "the worker sample does not keep offsets under /var/lib/iotconnect"
grep -q '^StateDirectory=iotconnect' /lib/systemd/system/iotconnect.service || fail "unit without StateDirectory=iotconnect"
exec_bin="$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' /lib/systemd/system/iotconnect.service)"
[ "$exec_bin" = /usr/bin/iotconnect ] || fail "ExecStart names $exec_bin, the package installs /usr/bin/iotconnect"

out="$(systemd-analyze verify --man=no /lib/systemd/system/iotconnect.service 2>&1 || true)"
# On a machine without a running systemd, verify may still print notices about the host; only lines
# naming our unit count.
if grep -i 'iotconnect' <<<"$out" | grep -q .; then echo "$out"; fail "systemd-analyze verify"; fi
echo "  systemd-analyze verify /lib/systemd/system/iotconnect.service: ok"

/usr/bin/iotconnect --version | sed 's/^/  /'
rc=0
/usr/bin/iotconnect validate /etc/iotconnect/connect-standalone.properties /etc/iotconnect/connect-iothub-source.properties \
  /etc/iotconnect/connect-iothub-sink.properties >/tmp/iotconnect-deb-validate.$$ 2>&1 || rc=$?
[ "$rc" = 78 ] || { cat /tmp/iotconnect-deb-validate.$$; fail "validate of the unfilled samples exited $rc, expected 78"; }
grep -q '^/etc/iotconnect/connect-iothub-source.properties:IotHub' /tmp/iotconnect-deb-validate.$$ ||
  { cat /tmp/iotconnect-deb-validate.$$; fail "validate did not name the source file's IotHub keys"; }
rm -f /tmp/iotconnect-deb-validate.$$
echo "  validate of the installed samples: exit 78 (PLACEHOLDERs to fill in), as expected"

# dpkg -r: binary and unit gone; the (edited) conffiles and the offsets directory stay.
echo "# edited by the admin" >>/etc/iotconnect/connect-iothub-sink.properties
echo offsets >/var/lib/iotconnect/connect.offsets
dpkg -r iotconnect >/dev/null
[ ! -e /usr/bin/iotconnect ] || fail "dpkg -r left /usr/bin/iotconnect"
[ ! -e /lib/systemd/system/iotconnect.service ] || fail "dpkg -r left the unit"
grep -q '# edited by the admin' /etc/iotconnect/connect-iothub-sink.properties || fail "dpkg -r lost the edited conffile"
[ -f /etc/iotconnect/connect-standalone.properties ] || fail "dpkg -r removed a conffile"
[ -f /var/lib/iotconnect/connect.offsets ] || fail "dpkg -r removed the offsets"
dpkg-query -W -f='${Status}\n' iotconnect | grep -q 'config-files' || fail "status after dpkg -r: $(dpkg-query -W -f='${Status}' iotconnect)"
echo "  dpkg -r: binary and unit removed; /etc/iotconnect (edited conffile kept) and /var/lib/iotconnect kept"

dpkg -P iotconnect >/dev/null
[ ! -e /etc/iotconnect ] || fail "dpkg -P left /etc/iotconnect"
[ ! -e /var/lib/iotconnect ] || fail "dpkg -P left /var/lib/iotconnect"
echo "  dpkg -P: /etc/iotconnect and /var/lib/iotconnect removed"
echo "check-deb: ok"
