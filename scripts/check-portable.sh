#!/usr/bin/env bash
# Checks the portable binary for HDInsight 5.1 edge nodes (Ubuntu 18.04.5: glibc 2.27, OpenSSL 1.1.1):
#   scripts/check-portable.sh [BINARY]          (default dist/iotconnect, built by scripts/release.sh)
#
# 1. ELF x86-64 with the standard interpreter /lib64/ld-linux-x86-64.so.2.
# 2. Every symbol version it requires is available on Ubuntu 18.04: GLIBC_* <= 2.27, GCC_* <= 7.0.0
#    (libgcc1 8.4), and no other versioned library.
# 3. Every NEEDED library is one Ubuntu 18.04 has (table below, also in the README); no libssl/libcrypto
#    (OpenSSL is linked in statically) and libsasl2.so.2 with sasl_client_new imported (Kerberos/GSSAPI).
# 4. It runs here: --version, then the demo (validate of the tutorial's three files, a source + sink run
#    against the local broker and the IoT Hub emulator) with this binary as the worker.
# Prints the measured facts (size, NEEDED, highest versions) the README quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-dist/iotconnect}"
[ -x "$bin" ] || { echo "check-portable: $bin missing (run scripts/release.sh)" >&2; exit 1; }
fail() { echo "check-portable: FAILED: $*" >&2; exit 1; }

# NEEDED library -> the Ubuntu 18.04 (bionic) package that ships it.
declare -A UBUNTU_1804=(
  [libc.so.6]=libc6 [libm.so.6]=libc6 [libdl.so.2]=libc6 [libpthread.so.0]=libc6 [librt.so.1]=libc6
  [libutil.so.1]=libc6 [ld-linux-x86-64.so.2]=libc6 [libgcc_s.so.1]=libgcc1 [libsasl2.so.2]=libsasl2-2
)
MAX_GLIBC=2.27
MAX_GCC=7.0.0

file_hdr="$(readelf -h "$bin")"
grep -q 'Class:.*ELF64' <<<"$file_hdr" || fail "not ELF64"
grep -q 'Machine:.*X86-64' <<<"$file_hdr" || fail "not x86-64"
interp="$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[ "$interp" = /lib64/ld-linux-x86-64.so.2 ] || fail "interpreter $interp"

# Required symbol versions, per library (objdump -p's "Version References").
refs="$(objdump -p "$bin" | awk '/^Version References:/{on=1; next} on && /^ *required from/{lib=$3; sub(":","",lib); next}
                                on && NF==4 && $4 ~ /_/ {print lib, $4} on && NF==0 {on=0}')"
[ -n "$refs" ] || fail "no version references found (objdump -p)"
ver_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$2" ]; }
max_glibc="" max_gcc=""
while read -r lib ver; do
  case "$ver" in
    GLIBC_PRIVATE) fail "$lib: GLIBC_PRIVATE" ;;
    GLIBC_*) v="${ver#GLIBC_}"; ver_le "$v" "$MAX_GLIBC" || fail "$lib: $ver > GLIBC_$MAX_GLIBC"
             { [ -z "$max_glibc" ] || ver_le "$max_glibc" "$v"; } && max_glibc="$v" ;;
    GCC_*) v="${ver#GCC_}"; ver_le "$v" "$MAX_GCC" || fail "$lib: $ver > GCC_$MAX_GCC"
           { [ -z "$max_gcc" ] || ver_le "$max_gcc" "$v"; } && max_gcc="$v" ;;
    *) fail "$lib: unexpected symbol version $ver" ;;
  esac
done <<<"$refs"

needed="$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
for lib in $needed; do
  [ -n "${UBUNTU_1804[$lib]:-}" ] || fail "NEEDED $lib is not in Ubuntu 18.04's base set (${!UBUNTU_1804[*]})"
done
grep -qx 'libsasl2.so.2' <<<"$needed" || fail "libsasl2.so.2 not linked: no Kerberos/GSSAPI"
objdump -T "$bin" | grep -q 'UND.* sasl_client_new$' || fail "sasl_client_new not imported"
if grep -E -q 'libssl|libcrypto' <<<"$needed"; then fail "links OpenSSL dynamically"; fi

echo "binary:        $bin"
echo "size:          $(stat -c %s "$bin") bytes ($(( ($(stat -c %s "$bin") + 524288) / 1048576 )) MiB)"
echo "highest:       GLIBC_$max_glibc, GCC_${max_gcc:-none}"
echo "NEEDED:        $(echo $needed | sed 's/ /, /g')"
echo "packages:      $(for l in $needed; do echo "${UBUNTU_1804[$l]}"; done | sort -u | tr '\n' ' ')"

out="$("$bin" --version)" || fail "--version"
echo "--version:     $out"
grep -q "^iotconnect " <<<"$out" || fail "--version printed $out"

echo "== the demo with this binary as the worker (validate + source + sink against broker and emulator)"
log="$(mktemp)"
if ! IOTCONNECT_BIN="$(readlink -f "$bin")" scripts/demo.sh >"$log" 2>&1; then
  cat "$log"; rm -f "$log"; fail "demo run with $bin"
fi
grep -E '^(.*records on iotin|  body: |.*demo complete)' "$log" | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^/  /'
rm -f "$log"
echo "check-portable: ok"
